"""Label parsers and pixel-mask loading: every format, its edge cases and its error messages; real label files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from raw_fixtures import masks_from_labels, write_ffp_mat, write_image, write_vol_label
from real_labels import PED2_RANGES

from vad.data.index import MaskSource
from vad.data.labels import (
    labels_to_ranges,
    load_masks,
    mask_images,
    parse_ucsd_m,
    ranges_to_labels,
    read_avenue_masks,
    read_ffp_mat,
    read_frame_labels,
    read_mnad_npy,
    read_ucsd_m,
    read_video_npys,
)
from vad.errors import DataError

PED2_LENGTHS = (180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180)
AVENUE_LENGTHS = (1439, 1211, 923, 947, 1007, 1283, 605, 36, 1175, 841, 472, 1271, 549, 507, 1001, 740, 426, 294)
AVENUE_LENGTHS += (248, 273, 76)
AVENUE_RANGES = [
    [(78, 120), (392, 422), (503, 666), (868, 910), (932, 1101)],
    [(273, 320), (724, 764), (1051, 1100)],
    [(295, 340), (582, 622)],
    [(380, 428), (649, 692)],
    [(469, 786)],
    [(345, 625), (856, 1007)],
    [(423, 494), (563, 595)],
    [(21, 30)],
    [(136, 183), (496, 566), (741, 755), (875, 981), (1013, 1044), (1104, 1163)],
    [(571, 607), (637, 656), (678, 713), (724, 755), (783, 818)],
    [(21, 164), (308, 346)],
    [(539, 617), (645, 729), (759, 843)],
    [(259, 286), (458, 510)],
    [(399, 455), (485, 500)],
    [(498, 587)],
    [(632, 730)],
    [(21, 56), (99, 420)],
    [(21, 285)],
    [(109, 240)],
    [(65, 144), (168, 241)],
    [(14, 66)],
]


def videos_of(lengths: tuple[int, ...]) -> dict[str, int]:
    return {f"{k:02d}": n for k, n in enumerate(lengths, start=1)}


def test_ranges_to_labels_is_one_indexed_inclusive() -> None:
    labels = ranges_to_labels([(2, 3), (6, 6)], 7)
    assert labels.dtype == np.uint8
    assert labels.tolist() == [0, 1, 1, 0, 0, 1, 0]
    assert labels_to_ranges(labels) == [(2, 3), (6, 6)]
    assert labels_to_ranges(np.ones(4, dtype=np.int8)) == [(1, 4)]
    assert labels_to_ranges(np.zeros(3)) == []
    with pytest.raises(ValueError, match="range 5-8 is outside frames 1-7"):
        ranges_to_labels([(5, 8)], 7)
    with pytest.raises(ValueError, match="range 0-2"):
        ranges_to_labels([(0, 2)], 7)


def test_ffp_mat_uint8_ranges_do_not_overflow(tmp_path: Path) -> None:
    path = tmp_path / "long.mat"
    # uint8 [250; 255]: the end (255) plus one overflows to 0 in uint8 arithmetic.
    write_ffp_mat(path, [[(250, 255)], [(1, 2), (255, 255)], []])
    assert scipy.io.loadmat(str(path))["gt"][0, 0].dtype == np.uint8
    labels = read_ffp_mat(path, {"01": 300, "02": 256, "03": 4})
    assert labels_to_ranges(labels["01"]) == [(250, 255)]
    assert labels["01"].sum() == 6
    assert labels_to_ranges(labels["02"]) == [(1, 2), (255, 255)]
    assert labels["03"].tolist() == [0, 0, 0, 0]


def test_ffp_mat_errors_name_file_counts_and_range(tmp_path: Path) -> None:
    path = tmp_path / "ped2.mat"
    write_ffp_mat(path, [[(1, 3)], [(2, 9)]])
    with pytest.raises(DataError, match=r"ped2\.mat: 2 label entries \(gt\) but 3 test videos"):
        read_ffp_mat(path, {"01": 5, "02": 9, "03": 4})
    with pytest.raises(DataError, match=r"ped2\.mat: video 02 has 8 frames but its label range 2-9 is outside"):
        read_ffp_mat(path, {"01": 5, "02": 8})
    other = tmp_path / "other.mat"
    scipy.io.savemat(str(other), {"labels": np.zeros(3)})
    with pytest.raises(DataError, match=r"other\.mat: no variable 'gt'.*labels"):
        read_ffp_mat(other, {"01": 3})


@pytest.mark.parametrize("shape", ["row", "flat"])
def test_mnad_npy_splits_by_video_lengths(tmp_path: Path, shape: str) -> None:
    values = np.array([0, 1, 1, 0, 0, 1, 1, 1, 0], dtype=np.int8)
    path = tmp_path / "frame_labels_x.npy"
    np.save(path, values[None] if shape == "row" else values)
    labels = read_mnad_npy(path, {"01": 4, "02": 2, "03": 3})
    assert {k: v.tolist() for k, v in labels.items()} == {"01": [0, 1, 1, 0], "02": [0, 1], "03": [1, 1, 0]}
    assert all(v.dtype == np.uint8 for v in labels.values())


def test_mnad_npy_mismatch_lists_total_and_per_video_counts(tmp_path: Path) -> None:
    path = tmp_path / "frame_labels_ped2.npy"
    np.save(path, np.zeros((1, 359), dtype=np.int64))
    with pytest.raises(DataError) as err:
        read_mnad_npy(path, {"01": 180, "02": 180})
    message = str(err.value)
    assert str(path) in message
    assert "359 frame labels but the 2 test videos hold 360 frames (01: 180, 02: 180)" in message
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([0, 2, 1]))
    with pytest.raises(DataError, match=r"bad\.npy: frame labels must be 0 \(normal\) or 1 \(anomalous\).*\[0, 1, 2\]"):
        read_mnad_npy(bad, {"01": 3})


def test_per_video_npy_labels_and_errors(tmp_path: Path) -> None:
    folder = tmp_path / "testing" / "labels"
    folder.mkdir(parents=True)
    np.save(folder / "01.npy", np.array([0, 1, 1], dtype=np.float32))
    np.save(folder / "02.npy", np.array([True, False]))
    labels = read_video_npys(folder, {"01": 3, "02": 2})
    assert labels["01"].tolist() == [0, 1, 1]
    assert labels["02"].tolist() == [1, 0]
    with pytest.raises(
        DataError, match=r"labels: no label file for test video\(s\) 03 \(expected .*labels/<video>\.npy"
    ):
        read_video_npys(folder, {"01": 3, "02": 2, "03": 4})
    with pytest.raises(DataError, match=r"labels: label lengths differ from frame counts \(01: 3 labels vs 4 frames\)"):
        read_video_npys(folder, {"01": 4, "02": 2})


def test_parse_ucsd_m_tolerates_real_world_syntax(tmp_path: Path) -> None:
    path = tmp_path / "UCSDped1.m"
    path.write_text(
        "TestVideoFile = {};\n"
        "% comment line with gt_frame = [1:2];\n"
        "TestVideoFile{end+1}.gt_frame = [60:152];\n"
        "TestVideoFile{end+1}.gt_frame = [5:90, 140:200];\n"
        "TestVideoFile{end+1}.gt_frame = [ 1 : 3 ,7  9:10 ]   % spaces, a single frame, no semicolon\n"
        "TestVideoFile{end+1}.gt_frame = [];\n"
    )
    assert parse_ucsd_m(path) == [[(60, 152)], [(5, 90), (140, 200)], [(1, 3), (7, 7), (9, 10)], []]
    labels = read_ucsd_m(path, {"01": 200, "02": 200, "03": 10, "04": 5})
    assert labels["02"].sum() == 86 + 61
    assert labels_to_ranges(labels["03"]) == [(1, 3), (7, 7), (9, 10)]
    with pytest.raises(DataError, match=r"UCSDped1\.m: 4 gt_frame lines but 3 test videos"):
        read_ucsd_m(path, {"01": 200, "02": 200, "03": 10})
    with pytest.raises(DataError, match=r"UCSDped1\.m: video 03 has 9 frames but its label range 9-10 is outside"):
        read_ucsd_m(path, {"01": 200, "02": 200, "03": 9, "04": 5})


def test_parse_ucsd_m_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.m"
    path.write_text("TestVideoFile{end+1}.gt_frame = [1:5];\nTestVideoFile{end+1}.gt_frame = [3-9];\n")
    with pytest.raises(DataError, match=r"bad\.m:2: cannot parse '3-9'; expected ranges like \[5:90, 140:200\]"):
        parse_ucsd_m(path)
    empty = tmp_path / "empty.m"
    empty.write_text("% nothing here\n")
    with pytest.raises(DataError, match=r"empty\.m: no 'TestVideoFile\{end\+1\}\.gt_frame"):
        parse_ucsd_m(empty)


def test_avenue_vol_label_frame_labels_and_masks(tmp_path: Path) -> None:
    labels = np.array([0, 1, 1, 0, 1], dtype=np.uint8)
    masks = masks_from_labels(labels, 12, 16, seed=0)
    write_vol_label(tmp_path / "1_label.mat", masks)
    write_vol_label(tmp_path / "2_label.mat", np.zeros((3, 12, 16), dtype=bool))
    found = read_avenue_masks(tmp_path, {"01": 5, "02": 3})
    assert found["01"].tolist() == labels.tolist()
    assert found["02"].tolist() == [0, 0, 0]
    loaded = load_masks(MaskSource(mat=tmp_path / "1_label.mat"), 5)
    assert loaded.dtype == bool
    assert np.array_equal(loaded, masks)
    with pytest.raises(DataError, match=r"1_label\.mat: 5 masks \(volLabel\) but video 01 has 6 frames"):
        read_avenue_masks(tmp_path, {"01": 6})
    with pytest.raises(DataError, match=r"no mask file for test video 03 \(expected .*3_label\.mat\)"):
        read_avenue_masks(tmp_path, {"03": 2})


def test_load_masks_from_images_and_npy(tmp_path: Path) -> None:
    masks = masks_from_labels(np.array([1, 0, 1]), 10, 12, seed=1)
    folder = tmp_path / "Test001_gt"
    for i, mask in enumerate(masks):
        write_image(folder / f"{i + 1}.bmp", (mask[:, :, None] * 255).astype(np.uint8))
    (folder / "._1.bmp").write_bytes(b"junk")
    assert np.array_equal(load_masks(mask_images(folder), 3), masks)
    np.save(tmp_path / "v.npy", masks.astype(np.uint8))
    assert np.array_equal(load_masks(MaskSource(npy=tmp_path / "v.npy"), 3), masks)
    with pytest.raises(DataError, match=r"Test001_gt: 3 pixel masks but the video has 4 frames"):
        load_masks(mask_images(folder), 4)


def test_read_frame_labels_dispatches_on_format(tmp_path: Path) -> None:
    videos = {"01": 3, "02": 2}
    write_ffp_mat(tmp_path / "x.mat", [[(2, 3)], [(1, 1)]])
    np.save(tmp_path / "x.npy", np.array([0, 1, 1, 1, 0]))
    (tmp_path / "x.m").write_text("TestVideoFile{end+1}.gt_frame = [2:3];\nTestVideoFile{end+1}.gt_frame = [1];\n")
    (tmp_path / "testing" / "labels").mkdir(parents=True)
    np.save(tmp_path / "testing" / "labels" / "01.npy", np.array([0, 1, 1]))
    np.save(tmp_path / "testing" / "labels" / "02.npy", np.array([1, 0]))
    expected = {"01": [0, 1, 1], "02": [1, 0]}
    for path, source in [
        (tmp_path / "x.mat", "x.mat (FFP gt ranges)"),
        (tmp_path / "x.npy", "x.npy (MNAD frame labels)"),
        (tmp_path / "x.m", "x.m (UCSD gt_frame ranges)"),
        (tmp_path / "testing" / "labels", "testing/labels (per-video .npy)"),
    ]:
        labels, found = read_frame_labels(path, videos)
        assert found == source
        assert {k: v.tolist() for k, v in labels.items()} == expected
    (tmp_path / "x.txt").write_text("1 2")
    with pytest.raises(DataError, match=r"x\.txt: unknown label format '\.txt'"):
        read_frame_labels(tmp_path / "x.txt", videos)
    with pytest.raises(DataError, match=r"nope\.mat: label file not found; pass labels="):
        read_frame_labels(tmp_path / "nope.mat", videos)


def test_real_ped2_mat_equals_mnad_npy(ped2_root: Path, shared_labels: Path) -> None:
    videos = videos_of(PED2_LENGTHS)
    from_mat = read_ffp_mat(ped2_root / "ped2.mat", videos)
    from_npy = read_mnad_npy(shared_labels / "frame_labels_ped2.npy", videos)
    assert sum(int(v.sum()) for v in from_mat.values()) == 1648
    assert np.array_equal(np.concatenate(list(from_mat.values())), np.concatenate(list(from_npy.values())))
    assert [labels_to_ranges(v) for v in from_mat.values()] == [[r] for r in PED2_RANGES]


@pytest.mark.parametrize("reshape", [False, True])
def test_real_avenue_labels_in_both_shapes(shared_labels: Path, tmp_path: Path, reshape: bool) -> None:
    path = shared_labels / "frame_labels_avenue.npy"
    if reshape:
        np.save(tmp_path / "flat.npy", np.load(path).reshape(-1))
        path = tmp_path / "flat.npy"
    labels = read_mnad_npy(path, videos_of(AVENUE_LENGTHS))
    assert sum(int(v.sum()) for v in labels.values()) == 3867
    assert [labels_to_ranges(v) for v in labels.values()] == AVENUE_RANGES


@pytest.mark.parametrize("reshape", [False, True])
def test_real_shanghaitech_labels_in_both_shapes(shared_labels: Path, tmp_path: Path, reshape: bool) -> None:
    path = shared_labels / "frame_labels_shanghai.npy"
    assert np.load(path).shape == (40791,)
    if reshape:
        np.save(tmp_path / "row.npy", np.load(path).reshape(1, -1))
        path = tmp_path / "row.npy"
    labels = read_mnad_npy(path, {"all": 40791})
    assert int(labels["all"].sum()) == 17326
    with pytest.raises(DataError, match="40791 frame labels but the 1 test videos hold 40790 frames"):
        read_mnad_npy(path, {"all": 40790})
