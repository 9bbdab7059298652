"""The synthetic default dataset: layout, labels, masks, anomaly kinds, determinism, refusal to overwrite."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vad.data.synthetic import KINDS, MANIFEST, SyntheticParams, build_scene, generate, main
from vad.errors import DataError

SMALL = {"num_train": 1, "num_test": 3, "frames_per_video": 40, "size": (32, 32)}


def _png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _video(folder: Path) -> np.ndarray:
    """(F, H, W) uint8 frames of one video folder."""
    return np.stack([_png(p) for p in sorted(folder.iterdir())])


@pytest.fixture(scope="module")
def default_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The default dataset (seed 0) and the seconds it took to generate."""
    start = time.perf_counter()
    root = generate(tmp_path_factory.mktemp("synthetic") / "data")
    return root, time.perf_counter() - start


@pytest.fixture(scope="module")
def manifest(default_set: tuple[Path, float]) -> dict:
    return json.loads((default_set[0] / MANIFEST).read_text())


def test_generation_is_fast(default_set: tuple[Path, float]) -> None:
    assert default_set[1] < 30.0


def test_layout(default_set: tuple[Path, float]) -> None:
    root = default_set[0]
    p = SyntheticParams()
    train = sorted(d.name for d in (root / "training" / "frames").iterdir())
    test = sorted(d.name for d in (root / "testing" / "frames").iterdir())
    assert train == ["01", "02", "03", "04", "05", "06", "07", "08"]
    assert test == ["01", "02", "03", "04", "05", "06"]
    assert sorted(p.name for p in (root / "testing" / "labels").iterdir()) == [f"{v}.npy" for v in test]
    names = [f"{i:03d}.png" for i in range(p.frames_per_video)]
    for folder in [*(root / "training" / "frames").iterdir(), *(root / "testing" / "frames").iterdir()]:
        assert sorted(f.name for f in folder.iterdir()) == names
    for video in test:
        assert sorted(f.name for f in (root / "testing" / "masks" / video).iterdir()) == names
        labels = np.load(root / "testing" / "labels" / f"{video}.npy")
        assert labels.dtype == np.uint8
        assert labels.shape == (p.frames_per_video,)
        assert set(np.unique(labels)) == {0, 1}  # both classes in every test video
    frame = _png(root / "testing" / "frames" / "01" / "000.png")
    assert frame.shape == (64, 64)
    assert frame.dtype == np.uint8


def test_manifest_records_parameters(default_set: tuple[Path, float], manifest: dict) -> None:
    assert manifest["seed"] == 0
    assert manifest["generator_version"] == 1
    assert manifest["params"] == SyntheticParams().to_json()
    assert manifest["params"]["size"] == [64, 64]


def test_segments_match_labels(default_set: tuple[Path, float], manifest: dict) -> None:
    root = default_set[0]
    kinds = set()
    anomalous = total = 0
    for video, info in manifest["test_videos"].items():
        labels = np.load(root / "testing" / "labels" / f"{video}.npy")
        expected = np.zeros_like(labels)
        for segment in info["segments"]:
            kinds.add(segment["kind"])
            assert segment["first"] <= segment["last"]
            expected[segment["first"] : segment["last"] + 1] = 1
        np.testing.assert_array_equal(labels, expected)
        assert 1 <= len(info["segments"]) <= 2
        assert info["segments"][0]["first"] >= 12  # normal frames come first
        assert info["anomalous_frames"] == int(labels.sum())
        anomalous += int(labels.sum())
        total += labels.size
    assert kinds == set(KINDS)
    assert 0.3 <= anomalous / total <= 0.5


def test_masks_mark_the_anomalous_object(default_set: tuple[Path, float]) -> None:
    root = default_set[0]
    background = build_scene(np.random.default_rng(0), (64, 64)).background
    for video in ["01", "02", "03", "04", "05", "06"]:
        labels = np.load(root / "testing" / "labels" / f"{video}.npy")
        frames = _video(root / "testing" / "frames" / video).astype(np.float64)
        masks = _video(root / "testing" / "masks" / video)
        assert set(np.unique(masks)) <= {0, 255}
        np.testing.assert_array_equal(masks.any(axis=(1, 2)), labels.astype(bool))
        area = (masks > 0).sum(axis=(1, 2))
        assert area[labels == 1].min() >= 4  # visible means at least 4 pixels
        contrast = [np.abs(f - background)[m > 0].mean() for f, m in zip(frames, masks, strict=True) if m.any()]
        # The object under the mask stands out from the empty scene (frames where it is mostly in view: clearly).
        assert np.mean(contrast) > 40.0
        assert min(c for c, a in zip(contrast, area[labels == 1], strict=True) if a >= 20) > 20.0


def _tracks(root: Path, manifest: dict, kind: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per segment of ``kind``: mask areas (n,) and mask centroids (n, 2) as (x, y) over its frames."""
    out = []
    for video, info in manifest["test_videos"].items():
        masks = _video(root / "testing" / "masks" / video) > 0
        for segment in info["segments"]:
            if segment["kind"] != kind:
                continue
            seg = masks[segment["first"] : segment["last"] + 1]
            ys, xs = np.mgrid[: seg.shape[1], : seg.shape[2]]
            area = seg.sum(axis=(1, 2))
            centroid = np.stack([(seg * xs).sum((1, 2)) / area, (seg * ys).sum((1, 2)) / area], axis=1)
            out.append((area, centroid))
    return out


def test_anomaly_kinds_behave_as_named(default_set: tuple[Path, float], manifest: dict) -> None:
    root = default_set[0]
    p = SyntheticParams()
    for kind in KINDS:
        for area, centroid in _tracks(root, manifest, kind):
            full = area >= 0.9 * area.max()  # fully in view: the centroid moves with the object
            step = np.diff(centroid[full], axis=0)
            speed = np.hypot(step[:, 0], step[:, 1])
            if kind == "speed":  # along the walkway at run_factor x the walking speed
                assert np.median(speed) == pytest.approx(p.walk_speed * p.run_factor, rel=0.2)
                assert np.abs(step[:, 1]).max() < 0.5
            if kind == "object":  # bigger than any walker, faster than walking
                assert area.max() > 70
                assert np.median(speed) == pytest.approx(p.walk_speed * p.vehicle_factor, rel=0.2)
            if kind == "direction":  # across the flow: mostly vertical
                assert np.median(np.abs(step[:, 1])) > 2 * np.median(np.abs(step[:, 0]))


def test_copy_last_is_informative_but_not_sufficient(default_set: tuple[Path, float]) -> None:
    """Copy-last detector: score = -PSNR(frame t, frame t-1), per-video min-max normalised, first frame dropped."""
    root = default_set[0]
    scores, labels = [], []
    for video in ["01", "02", "03", "04", "05", "06"]:
        frames = _video(root / "testing" / "frames" / video).astype(np.float64) / 255.0
        mse = ((frames[1:] - frames[:-1]) ** 2).mean(axis=(1, 2))
        raw = 10.0 * np.log10(mse)
        scores.append((raw - raw.min()) / (raw.max() - raw.min()))
        labels.append(np.load(root / "testing" / "labels" / f"{video}.npy")[1:])
    auc = roc_auc_score(np.concatenate(labels), np.concatenate(scores))
    assert 0.6 < auc < 0.9


def test_same_seed_same_bytes_other_seed_other_scene(tmp_path: Path) -> None:
    # Different global random states around the two runs: the generator must not depend on them.
    np.random.seed(1)  # noqa: NPY002
    random.seed(1)
    a = _files(generate(tmp_path / "a", 7, **SMALL))
    np.random.seed(2)  # noqa: NPY002
    random.seed(2)
    b = _files(generate(tmp_path / "b", 7, **SMALL))
    c = _files(generate(tmp_path / "c", 8, **SMALL))
    assert a == b
    assert a.keys() == c.keys()
    assert a["training/frames/01/000.png"] != c["training/frames/01/000.png"]
    assert json.loads(a[MANIFEST])["test_videos"] != json.loads(c[MANIFEST])["test_videos"]


def test_second_call_returns_existing_dataset_untouched(tmp_path: Path) -> None:
    root = generate(tmp_path / "data", 3, **SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate(root, 3, **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folder left behind


def test_refuses_to_overwrite_other_content(tmp_path: Path) -> None:
    root = generate(tmp_path / "data", 3, **SMALL)
    before = _files(root)
    with pytest.raises(DataError, match=r"data: holds a synthetic dataset made with other parameters.*delete"):
        generate(root, 4, **SMALL)
    with pytest.raises(DataError, match="other parameters"):
        generate(root, 3, **{**SMALL, "frames_per_video": 41})
    assert _files(root) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"other: exists and is not a synthetic dataset.*delete the folder"):
        generate(other, 3, **SMALL)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_fills_an_existing_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    root = generate(tmp_path / "data", 3, **SMALL)
    assert (root / MANIFEST).is_file()
    assert len(list((root / "testing" / "frames").iterdir())) == 3


def test_without_masks(tmp_path: Path) -> None:
    root = generate(tmp_path / "data", 3, **SMALL, masks=False)
    assert not (root / "testing" / "masks").exists()
    assert len(list((root / "testing" / "labels").iterdir())) == 3


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--num-train", "1", "--num-test", "3", "--frames", "40", "--size", "32", "48"]
    main([str(tmp_path / "data"), "--seed", "5", *args])
    assert "1 training and 3 test videos" in capsys.readouterr().out
    assert _png(tmp_path / "data" / "training" / "frames" / "01" / "039.png").shape == (32, 48)
    with pytest.raises(SystemExit, match=r"^error: .*data: holds a synthetic dataset made with other parameters"):
        main([str(tmp_path / "data"), "--seed", "6", *args])


def test_rejects_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size must be at least 32x32"):
        generate(tmp_path / "data", size=(16, 16))
    with pytest.raises(ValueError, match="frames_per_video must be >= 36"):
        generate(tmp_path / "data", frames_per_video=20)
    assert not (tmp_path / "data").exists()
