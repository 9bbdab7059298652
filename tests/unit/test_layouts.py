"""Dataset readers: the FFP layout, generic folders, single videos, the official raw downloads, open_dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from raw_fixtures import (
    AVENUE_RANGES,
    make_frames,
    write_avenue,
    write_ffp,
    write_ffp_mat,
    write_image,
    write_shanghaitech,
    write_ucsd,
    write_video,
)
from real_labels import PED2_RANGES

from vad.data.catalog import KNOWN_DATASETS, dataset_info
from vad.data.index import iter_frames
from vad.data.labels import labels_to_ranges, load_masks
from vad.data.layout import detect_layout, open_dataset, open_video_file
from vad.errors import DataError


def as_lists(index_videos) -> dict[str, list[int]]:
    return {v.name: v.labels.tolist() for v in index_videos}


def expected_lists(labels: dict[str, np.ndarray]) -> dict[str, list[int]]:
    return {k: v.tolist() for k, v in labels.items()}


def test_real_ped2(ped2_root: Path, shared_labels: Path) -> None:
    index = open_dataset("ped2", ped2_root)
    assert (index.layout, index.label_source) == ("ffp", "ped2.mat (FFP gt ranges)")
    assert (len(index.train), sum(v.num_frames for v in index.train)) == (16, 2550)
    assert (len(index.test), sum(v.num_frames for v in index.test)) == (12, 2010)
    assert [v.name for v in index.test] == [f"{k:02d}" for k in range(1, 13)]
    assert index.test[0].source.images[:2] == (
        ped2_root / "testing/frames/01/000.jpg",
        ped2_root / "testing/frames/01/001.jpg",
    )
    labels = np.concatenate([v.labels for v in index.test])
    assert int(labels.sum()) == 1648
    assert np.array_equal(labels, np.load(shared_labels / "frame_labels_ped2.npy").reshape(-1))
    assert [labels_to_ranges(v.labels) for v in index.test] == [[r] for r in PED2_RANGES]
    mnad = open_dataset("ped2", ped2_root, labels=shared_labels / "frame_labels_ped2.npy")
    assert mnad.label_source == "frame_labels_ped2.npy (MNAD frame labels)"
    assert np.array_equal(np.concatenate([v.labels for v in mnad.test]), labels)
    assert not open_dataset("ped2", ped2_root, labels=None).has_labels


def test_ffp_frames_in_natural_order_hidden_files_ignored(tmp_path: Path) -> None:
    frames = make_frames(11, 8, 8, 1, seed=0)
    folder = tmp_path / "training" / "frames" / "cam"
    for i, frame in enumerate(frames):
        write_image(folder / f"{i + 1}.png", frame)
    (folder / "._2.png").write_bytes(b"junk")
    (folder / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "training" / "frames" / ".hidden").mkdir()
    index = open_dataset("folder", tmp_path)
    (video,) = index.train
    assert [p.name for p in video.source.images] == [f"{i}.png" for i in range(1, 12)]
    assert np.array_equal(np.stack(list(iter_frames(video.source, channels=1))), frames)
    assert index.test == []
    assert index.label_source is None


def test_ffp_label_sources_in_auto_order(tmp_path: Path) -> None:
    fixture = write_ffp(tmp_path)
    index = open_dataset("ped2", tmp_path)
    assert not index.has_labels
    assert index.label_source is None
    np.save(tmp_path / "frame_labels_ped2.npy", np.concatenate(list(fixture.labels.values()))[None])
    assert open_dataset("ped2", tmp_path).label_source == "frame_labels_ped2.npy (MNAD frame labels)"
    write_ffp_mat(tmp_path / "some_gt.mat", [[(2, 3)], [(1, 4)]])
    assert open_dataset("ped2", tmp_path).label_source == "some_gt.mat (FFP gt ranges)"
    write_ffp_mat(tmp_path / "ped2.mat", [[(2, 3)], [(1, 4)]])
    assert open_dataset("ped2", tmp_path).label_source == "ped2.mat (FFP gt ranges)"
    (tmp_path / "testing" / "test_frame_mask").mkdir()
    for name, labels in fixture.labels.items():
        np.save(tmp_path / "testing" / "test_frame_mask" / f"{name}.npy", labels)
    assert open_dataset("ped2", tmp_path).label_source == "testing/test_frame_mask (per-video .npy)"
    (tmp_path / "testing" / "labels").mkdir()
    for name, labels in fixture.labels.items():
        np.save(tmp_path / "testing" / "labels" / f"{name}.npy", labels)
    index = open_dataset("ped2", tmp_path)
    assert index.label_source == "testing/labels (per-video .npy)"
    assert as_lists(index.test) == expected_lists(fixture.labels)


def test_ffp_explicit_labels(tmp_path: Path) -> None:
    fixture = write_ffp(tmp_path / "data")
    write_ffp_mat(tmp_path / "data" / "mine.mat", [[(2, 3)], [(1, 4)]])
    write_ffp_mat(tmp_path / "other.mat", [[(1, 5)], [(1, 1)]])
    assert open_dataset("folder", tmp_path / "data").label_source == "mine.mat (FFP gt ranges)"
    index = open_dataset("folder", tmp_path / "data", labels=tmp_path / "other.mat")
    assert as_lists(index.test) == {"01": [1, 1, 1, 1, 1], "02": [1, 0, 0, 0]}
    index = open_dataset("folder", tmp_path / "data", labels="mine.mat")
    assert as_lists(index.test) == expected_lists(fixture.labels)
    with pytest.raises(DataError, match=r"missing\.npy: label file not found"):
        open_dataset("folder", tmp_path / "data", labels=tmp_path / "missing.npy")


def test_several_gt_mats_must_be_chosen(tmp_path: Path) -> None:
    write_ffp(tmp_path)
    write_ffp_mat(tmp_path / "a.mat", [[(2, 3)], [(1, 4)]])
    write_ffp_mat(tmp_path / "b.mat", [[(2, 3)], [(1, 4)]])
    with pytest.raises(DataError, match=r"several label files with a gt variable \(a\.mat, b\.mat\); choose one with"):
        open_dataset("folder", tmp_path)
    assert open_dataset("folder", tmp_path, labels="b.mat").label_source == "b.mat (FFP gt ranges)"


def test_ffp_pixel_masks(tmp_path: Path) -> None:
    fixture = write_ffp(tmp_path)
    diagonal = np.eye(16, 24, dtype=bool)
    masks = {name: np.stack([np.roll(diagonal, i, axis=1) for i in range(len(f))]) for name, f in fixture.test.items()}
    (tmp_path / "testing" / "test_pixel_mask").mkdir()
    np.save(tmp_path / "testing" / "test_pixel_mask" / "01.npy", masks["01"])
    for i, mask in enumerate(masks["02"]):
        write_image(tmp_path / "testing" / "masks" / "02" / f"{i:03d}.png", (mask[:, :, None] * 255).astype(np.uint8))
    index = open_dataset("folder", tmp_path)
    for video in index.test:
        assert np.array_equal(load_masks(video.masks, video.num_frames), masks[video.name])
    assert index.test[0].masks.npy == tmp_path / "testing" / "test_pixel_mask" / "01.npy"
    assert len(index.test[1].masks.images) == 4


def test_empty_video_folder_is_named(tmp_path: Path) -> None:
    write_ffp(tmp_path)
    empty = tmp_path / "testing" / "frames" / "03"
    empty.mkdir()
    (empty / "._000.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match=rf"{empty}: video folder holds no frames"):
        open_dataset("ped2", tmp_path)
    shutil.rmtree(tmp_path / "testing" / "frames")
    (tmp_path / "testing" / "frames").mkdir()
    with pytest.raises(DataError, match=r"testing/frames: no video folders inside; expected testing/frames/<video>/"):
        open_dataset("ped2", tmp_path)


def test_missing_root_shows_tree_and_prepare_command(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        open_dataset("avenue", tmp_path / "avenue")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'avenue'}: dataset folder of 'avenue' not found")
    assert "training/frames/<video>/<frame>.jpg" in message
    assert "python -m vad.prepare dataset=avenue source=<download folder>" in message
    with pytest.raises(DataError, match="generated on first use"):
        open_dataset("synthetic", tmp_path / "nothing")
    with pytest.raises(DataError, match=r"<root>/training/<video>\.avi"):
        open_dataset("folder", tmp_path / "nothing")


def test_unknown_dataset_and_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        dataset_info("ped3")
    assert str(err.value) == (
        f"unknown dataset 'ped3'; known: {', '.join(KNOWN_DATASETS)} (use dataset=folder with its root for any "
        "other footage)"
    )
    assert set(KNOWN_DATASETS) == {"ped1", "ped2", "avenue", "shanghaitech", "synthetic", "folder"}
    with pytest.raises(DataError, match="unknown layout 'mnad'; choose one of auto, ffp, ucsd"):
        open_dataset("ped2", tmp_path, layout="mnad")
    with pytest.raises(DataError, match="not in the FFP layout"):
        open_dataset("ped2", tmp_path, layout="ffp")


def test_own_footage_takes_any_name(tmp_path: Path) -> None:
    """dataset=folder dataset.name=mycam: the name only labels the run; the layout is read from the files."""
    write_video(tmp_path / "cam.avi", make_frames(4, 16, 16, 3, seed=1))
    index = open_dataset("mycam", tmp_path)
    assert (index.name, [v.name for v in index.train]) == ("mycam", ["cam"])
    with pytest.raises(DataError, match=r"<root>/training/<video>\.avi"):
        open_dataset("mycam", tmp_path / "nothing")


def test_folder_of_videos_and_frame_folders(tmp_path: Path) -> None:
    write_video(tmp_path / "cam10.avi", make_frames(4, 16, 16, 3, seed=1))
    write_video(tmp_path / "cam2.avi", make_frames(3, 16, 16, 3, seed=2))
    frames = make_frames(5, 16, 16, 3, seed=3)
    for i, frame in enumerate(frames):
        write_image(tmp_path / "cam3" / f"{i}.png", frame)
    (tmp_path / "notes.txt").write_text("not a video")
    index = open_dataset("folder", tmp_path)
    assert (index.layout, index.test) == ("folder", [])
    assert [(v.name, v.num_frames) for v in index.train] == [("cam2", 3), ("cam3", 5), ("cam10", 4)]
    assert index.train[0].source.video == tmp_path / "cam2.avi"
    write_image(tmp_path / "cam2" / "0.png", frames[0])
    with pytest.raises(DataError, match="cam2 is both a video file and a frame folder"):
        open_dataset("folder", tmp_path)


def test_folder_with_training_and_testing(tmp_path: Path) -> None:
    write_video(tmp_path / "training" / "a.avi", make_frames(4, 16, 16, 3, seed=1))
    write_video(tmp_path / "testing" / "b.avi", make_frames(5, 16, 16, 3, seed=2))
    for i, frame in enumerate(make_frames(3, 16, 16, 3, seed=3)):
        write_image(tmp_path / "testing" / "c" / f"{i}.jpg", frame)
    (tmp_path / "testing" / "labels").mkdir()
    np.save(tmp_path / "testing" / "labels" / "b.npy", np.array([0, 0, 1, 1, 0], dtype=np.uint8))
    np.save(tmp_path / "testing" / "labels" / "c.npy", np.array([1, 0, 0], dtype=np.uint8))
    index = open_dataset("folder", tmp_path)
    assert [v.name for v in index.train] == ["a"]
    assert as_lists(index.test) == {"b": [0, 0, 1, 1, 0], "c": [1, 0, 0]}
    assert index.label_source == "testing/labels (per-video .npy)"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=rf"{empty}: no videos .* or frame folders found"):
        open_dataset("folder", empty)


def test_single_video_file(tmp_path: Path) -> None:
    path = tmp_path / "street.avi"
    write_video(path, make_frames(7, 16, 16, 3, seed=0))
    for index in (open_video_file(path), open_dataset("folder", path)):
        assert (index.layout, index.name, index.train, index.label_source) == ("video", "street", [], None)
        (video,) = index.test
        assert (video.name, video.source.video, video.labels, video.num_frames) == ("street", path, None, 7)
    with pytest.raises(DataError, match=r"missing\.avi: video file not found"):
        open_video_file(tmp_path / "missing.avi")


def test_real_video_file(vtest_avi: Path) -> None:
    index = open_dataset("folder", vtest_avi, layout="video")
    assert index.test[0].num_frames == 795


def test_raw_ucsd(tmp_path: Path) -> None:
    fixture = write_ucsd(tmp_path / "download")
    assert detect_layout(fixture.source) == "ucsd"
    for root in (fixture.source, fixture.source / "UCSDped2"):
        index = open_dataset("ped2", root)
        assert (index.layout, index.label_source) == ("ucsd", "UCSDped2.m (UCSD gt_frame ranges)")
        assert [v.name for v in index.train] == ["01", "02"]
        assert [v.name for v in index.test] == ["01", "02", "03"]
        for video in index.test:
            assert np.array_equal(np.stack(list(iter_frames(video.source, channels=1))), fixture.test[video.name])
        for video in index.train:
            assert np.array_equal(np.stack(list(iter_frames(video.source, channels=1))), fixture.train[video.name])
        assert as_lists(index.test) == expected_lists(fixture.labels)
        assert [v.masks is not None for v in index.test] == [True, False, True]
        assert np.array_equal(load_masks(index.test[2].masks, 5), fixture.masks["03"])
    with pytest.raises(DataError, match=r"cannot tell which UCSD set to read \(UCSDped folders found: UCSDped2\)"):
        open_dataset("ped1", fixture.source)
    (fixture.source / "UCSDped2" / "Test" / "UCSDped2.m").unlink()
    with pytest.raises(DataError, match=r"Test: no UCSDped2\.m label file .* or pass labels=<label file>"):
        open_dataset("ped2", fixture.source)
    write_ffp_mat(tmp_path / "ped2.mat", [[(1, 7)], [(1, 1)], [(5, 5)]])
    index = open_dataset("ped2", fixture.source, labels=tmp_path / "ped2.mat")
    assert index.label_source == "ped2.mat (FFP gt ranges)"
    assert index.test[0].labels.tolist() == [1] * 7


def test_raw_avenue(tmp_path: Path) -> None:
    fixture = write_avenue(tmp_path / "Avenue Dataset")
    assert detect_layout(fixture.source) == "avenue"
    index = open_dataset("avenue", fixture.source)
    assert (index.layout, index.label_source) == ("avenue", "testing_label_mask volLabel (pixel masks)")
    assert [(v.name, v.num_frames) for v in index.train] == [("01", 5), ("02", 4)]
    assert [v.source.video.name for v in index.test] == ["01.avi", "02.avi"]
    assert as_lists(index.test) == expected_lists(fixture.labels)
    assert np.array_equal(load_masks(index.test[1].masks, 5), fixture.masks["02"])
    decoded = np.stack(list(iter_frames(index.test[0].source, channels=3))).astype(int)
    assert decoded.shape == fixture.test["01"].shape
    assert np.abs(decoded - fixture.test["01"]).mean() < 4
    write_ffp_mat(tmp_path / "avenue.mat", [[(1, 1), (6, 6)], [(2, 3)]])
    ranges = open_dataset("avenue", fixture.source, labels=tmp_path / "avenue.mat")
    assert ranges.label_source == "avenue.mat (FFP gt ranges)"
    assert as_lists(ranges.test) == {"01": [1, 0, 0, 0, 0, 1], "02": [0, 1, 1, 0, 0]}
    assert [labels_to_ranges(v.labels) for v in index.test] == list(AVENUE_RANGES.values())


def test_raw_shanghaitech(tmp_path: Path) -> None:
    fixture = write_shanghaitech(tmp_path / "shanghaitech")
    for root in (fixture.source, tmp_path):
        assert detect_layout(root) == "shanghaitech"
        index = open_dataset("shanghaitech", root)
        assert (index.layout, index.label_source) == ("shanghaitech", "testing/test_frame_mask (per-video .npy)")
        assert [(v.name, v.num_frames) for v in index.train] == [("01_001", 5), ("01_002", 4)]
        assert [v.name for v in index.test] == ["01_0014", "02_0128"]
        assert as_lists(index.test) == expected_lists(fixture.labels)
        assert np.array_equal(np.stack(list(iter_frames(index.test[0].source, 3))), fixture.test["01_0014"])
        assert np.array_equal(load_masks(index.test[0].masks, 6), fixture.masks["01_0014"])
    (fixture.source / "testing" / "test_frame_mask" / "02_0128.npy").unlink()
    with pytest.raises(DataError, match=r"test_frame_mask: no label file for test video\(s\) 02_0128"):
        open_dataset("shanghaitech", fixture.source)
