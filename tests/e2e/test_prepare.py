"""``vad.prepare``: official downloads (in miniature) round-trip into the FFP layout; idempotence, refusals, the CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
from omegaconf import DictConfig
from raw_fixtures import (
    RawFixture,
    make_frames,
    write_avenue,
    write_ffp_mat,
    write_image,
    write_shanghaitech,
    write_ucsd,
    write_video,
)

from vad import config_dir
from vad.app.prepare import prepare, run
from vad.data.frames import iter_video, read_image
from vad.data.index import iter_frames
from vad.data.labels import load_masks
from vad.data.layout import open_dataset
from vad.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]


def frames_of(folder: Path, channels: int) -> np.ndarray:
    return np.stack([read_image(p, channels) for p in sorted(folder.iterdir())])


def check_round_trip(fixture: RawFixture, out: Path, channels: int) -> None:
    """The prepared folder reads back with the fixture's videos, labels and masks."""
    index = open_dataset(fixture.dataset, out)
    assert index.layout == "ffp"
    assert [v.name for v in index.train] == list(fixture.train)
    assert [v.name for v in index.test] == list(fixture.test)
    for video in index.test:
        assert np.array_equal(video.labels, fixture.labels[video.name])
        assert video.labels.dtype == np.uint8
        if video.name in fixture.masks:
            assert np.array_equal(load_masks(video.masks, video.num_frames), fixture.masks[video.name])
        else:
            assert video.masks is None
    for split, expected in ((index.train, fixture.train), (index.test, fixture.test)):
        for video in split:
            frames = np.stack(list(iter_frames(video.source, channels)))
            assert frames.shape == expected[video.name].shape
            if fixture.lossless:
                assert np.array_equal(frames, expected[video.name])


def test_ucsd_round_trip_is_exact(tmp_path: Path) -> None:
    fixture = write_ucsd(tmp_path / "download")
    out = tmp_path / "data" / "ped2"
    result = prepare("ped2", fixture.source, out)
    assert not result.skipped
    check_round_trip(fixture, out, channels=1)
    assert sorted(p.name for p in (out / "training" / "frames" / "01").iterdir()) == [f"{i:03d}.tif" for i in range(6)]
    manifest = json.loads((out / "prepare.json").read_text())
    assert manifest == result.manifest
    assert manifest["dataset"] == "ped2"
    assert manifest["source"] == str(fixture.source.resolve())
    assert manifest["label_source"] == "UCSDped2.m (UCSD gt_frame ranges)"
    assert (manifest["train"], manifest["test"]) == ({"01": 6, "02": 5}, {"01": 7, "02": 6, "03": 5})
    assert manifest["anomalous_test_frames"] == 4 + 3 + 1
    assert manifest["masks"] == ["01", "03"]
    assert manifest["origins"]["testing/02"] == str(fixture.source / "UCSDped2" / "Test" / "Test002")
    assert len(manifest["fingerprint"]) == 64
    assert open_dataset("ped2", out).label_source == (
        "testing/labels (per-video .npy); prepared from UCSDped2.m (UCSD gt_frame ranges)"
    )
    assert sorted(p.name for p in out.parent.iterdir()) == ["ped2"]


def test_avenue_video_frames_are_written_losslessly(tmp_path: Path) -> None:
    fixture = write_avenue(tmp_path / "Avenue Dataset")
    out = tmp_path / "avenue"
    prepare("avenue", fixture.source, out)
    check_round_trip(fixture, out, channels=3)
    for split, folder in (("training", "training_videos"), ("testing", "testing_videos")):
        for name in ("01", "02"):
            written = frames_of(out / split / "frames" / name, 3)
            decoded = np.stack(list(iter_video(fixture.source / folder / f"{name}.avi", 3)))
            assert np.array_equal(written, decoded)
    assert sorted(p.name for p in (out / "testing" / "frames" / "02").iterdir()) == [f"{i:03d}.png" for i in range(5)]
    assert json.loads((out / "prepare.json").read_text())["label_source"] == (
        "testing_label_mask volLabel (pixel masks)"
    )


def test_avenue_with_ffp_ranges_and_jpg_frames(tmp_path: Path) -> None:
    fixture = write_avenue(tmp_path / "raw")
    write_ffp_mat(tmp_path / "avenue.mat", [[(1, 1), (6, 6)], [(2, 3)]])
    out = tmp_path / "avenue"
    result = prepare("avenue", fixture.source, out, labels=tmp_path / "avenue.mat", frame_format="jpg")
    assert result.manifest["label_source"] == "avenue.mat (FFP gt ranges)"
    index = open_dataset("avenue", out)
    assert [v.labels.tolist() for v in index.test] == [[1, 0, 0, 0, 0, 1], [0, 1, 1, 0, 0]]
    assert index.label_source == "testing/labels (per-video .npy); prepared from avenue.mat (FFP gt ranges)"
    assert [p.suffix for p in index.train[0].source.images] == [".jpg"] * 5
    with pytest.raises(ConfigError, match="frame_format='gif': choose one of png, jpg"):
        prepare("avenue", fixture.source, tmp_path / "other", frame_format="gif")


def test_shanghaitech_round_trip(tmp_path: Path) -> None:
    fixture = write_shanghaitech(tmp_path / "shanghaitech")
    out = tmp_path / "prepared"
    result = prepare("shanghaitech", fixture.source, out)
    check_round_trip(fixture, out, channels=3)
    copied = out / "testing" / "frames" / "01_0014" / "003.jpg"
    assert copied.read_bytes() == (fixture.source / "testing" / "frames" / "01_0014" / "003.jpg").read_bytes()
    assert result.manifest["label_source"] == "testing/test_frame_mask (per-video .npy)"
    assert result.manifest["anomalous_test_frames"] == 4


def test_long_video_names_are_padded_wider(tmp_path: Path) -> None:
    source = tmp_path / "footage"
    write_video(source / "long.avi", make_frames(1001, 8, 8, 3, seed=0))
    out = tmp_path / "out"
    prepare("folder", source, out)
    names = sorted(p.name for p in (out / "training" / "frames" / "long").iterdir())
    assert names == [f"{i:04d}.png" for i in range(1001)]


def test_frames_are_renumbered_in_natural_order(tmp_path: Path) -> None:
    source = tmp_path / "footage"
    frames = make_frames(11, 8, 8, 1, seed=0)
    for i, frame in enumerate(frames):
        write_image(source / "cam" / f"{i + 1}.png", frame)
    prepare("folder", source, tmp_path / "out")
    folder = tmp_path / "out" / "training" / "frames" / "cam"
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:03d}.png" for i in range(11)]
    assert np.array_equal(frames_of(folder, 1), frames)


def test_second_run_does_nothing_and_a_changed_source_rebuilds(tmp_path: Path) -> None:
    fixture = write_ucsd(tmp_path / "download")
    out = tmp_path / "ped2"
    prepare("ped2", fixture.source, out)
    marker = out / "training" / "frames" / "01" / "000.tif"
    mtime = marker.stat().st_mtime_ns
    again = prepare("ped2", fixture.source, out)
    assert again.skipped
    assert marker.stat().st_mtime_ns == mtime
    (fixture.source / "UCSDped2" / "Test" / "UCSDped2.m").write_text(
        "TestVideoFile{end+1}.gt_frame = [1:7];\n"
        "TestVideoFile{end+1}.gt_frame = [1];\n"
        "TestVideoFile{end+1}.gt_frame = [];\n"
    )
    rebuilt = prepare("ped2", fixture.source, out)
    assert not rebuilt.skipped
    assert rebuilt.manifest["anomalous_test_frames"] == 8
    assert np.load(out / "testing" / "labels" / "01.npy").tolist() == [1] * 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["download", "ped2"]
    (out / "training" / "frames" / "02" / "004.tif").unlink()
    assert not prepare("ped2", fixture.source, out).skipped
    assert (out / "training" / "frames" / "02" / "004.tif").is_file()


def test_refuses_to_overwrite_anything_else(tmp_path: Path) -> None:
    ucsd = write_ucsd(tmp_path / "download")
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError) as err:
        prepare("ped2", ucsd.source, out)
    assert str(err.value) == (
        f"{out}: folder is not empty and holds files not written by prepare, not ped2 from {ucsd.source}; nothing "
        "was changed. Remove the folder or choose another out=<folder>"
    )
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    prepared = tmp_path / "ped2"
    prepare("ped2", ucsd.source, prepared)
    avenue = write_avenue(tmp_path / "avenue_raw")
    with pytest.raises(
        DataError, match=rf"{prepared}: folder is not empty and holds ped2 from {ucsd.source}, not avenue"
    ):
        prepare("avenue", avenue.source, prepared)
    with pytest.raises(DataError, match="the output folder overlaps the source"):
        prepare("ped2", ucsd.source, ucsd.source / "prepared")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not prepare("ped2", ucsd.source, empty).skipped
    with pytest.raises(DataError, match=r"nowhere: source not found; pass source=<the folder of the official ped2"):
        prepare("ped2", tmp_path / "nowhere", tmp_path / "x")


def test_failed_run_leaves_no_half_dataset(tmp_path: Path) -> None:
    source = tmp_path / "footage"
    write_video(source / "training" / "a.avi", make_frames(4, 16, 16, 3, seed=0))
    (source / "training" / "b.avi").write_bytes(b"not a video at all")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"b\.avi"):
        prepare("folder", source, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["footage"]


def test_mask_count_mismatch_is_named(tmp_path: Path) -> None:
    fixture = write_ucsd(tmp_path / "download")
    gt = fixture.source / "UCSDped2" / "Test" / "Test003_gt"
    (gt / "005.bmp").unlink()
    with pytest.raises(DataError, match=rf"^{gt}: 4 pixel masks but test video 03 has 5 frames; fix the masks"):
        prepare("ped2", fixture.source, tmp_path / "ped2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["download"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "vad.prepare", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fixture = write_ucsd(tmp_path / "download")
    work = tmp_path / "work"
    work.mkdir()
    done = run_cli("dataset=ped2", f"source={fixture.source}", "paths.data_dir=data", cwd=work)
    assert done.returncode == 0, done.stderr
    assert "3 test videos, 29 frames; labels: UCSDped2.m (UCSD gt_frame ranges)" in done.stdout
    check_round_trip(fixture, work / "data" / "ped2", channels=1)
    assert sorted(p.name for p in work.iterdir()) == ["data"]
    # the CLI's task in this process (what the second command would do): nothing, and it says so
    with caplog.at_level(logging.INFO, logger="vad.app.prepare"):
        again = run(compose("dataset=ped2", f"source={fixture.source}", f"out={work / 'data' / 'ped2'}"))
    assert again.skipped
    assert "already prepared; nothing to do" in caplog.text
    failed = run_cli("dataset=avenue", f"source={fixture.source}", f"out={work / 'data' / 'ped2'}", cwd=work)
    assert failed.returncode == 2
    assert failed.stderr.startswith(f"error: {work / 'data' / 'ped2'}: folder is not empty")
    assert "Traceback" not in failed.stderr


def compose(*overrides: str) -> DictConfig:
    with hydra.initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra.compose("prepare", overrides=list(overrides))


def test_config_composes_and_checks_required_keys(tmp_path: Path) -> None:
    cfg = compose("dataset=ped2", "source=/downloads/ucsd", "paths.data_dir=/data")
    assert (cfg.dataset.name, cfg.out, cfg.labels, cfg.layout, cfg.frame_format) == (
        "ped2",
        "/data/ped2",
        "auto",
        "auto",
        "png",
    )
    with pytest.raises(ConfigError) as err:
        run(compose(f"source={tmp_path}"))
    assert str(err.value) == (
        "dataset is required: python -m vad.prepare dataset=<ped1|ped2|avenue|shanghaitech> source=<download folder>"
    )
    with pytest.raises(ConfigError, match=r"^source is required: python -m vad.prepare dataset=ped2 source=<download"):
        run(compose("dataset=ped2"))
    with pytest.raises(ConfigError, match=r"^out is required for dataset=folder: add out=<folder>"):
        run(compose("dataset=folder", f"source={tmp_path}"))


def test_unknown_dataset_name_lists_the_known_ones(tmp_path: Path) -> None:
    fixture = write_ucsd(tmp_path / "download")
    with pytest.raises(DataError, match=r"unknown dataset 'ped3'; known: ped1, ped2, avenue, shanghaitech"):
        prepare("ped3", fixture.source, tmp_path / "out")
    assert not (tmp_path / "out").exists()
