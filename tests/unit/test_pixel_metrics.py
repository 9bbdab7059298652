"""Pixel-level evaluation: mask reading in the three formats, resizing, pixel AUC, the UCSD 40 % criterion, RBDC and
TBDC, each on hand-made masks and maps whose answer is computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from raw_fixtures import write_image, write_vol_label
from sklearn.metrics import roc_auc_score

from vad.data.index import FrameSource, MaskSource, Video
from vad.data.labels import mask_images
from vad.errors import DataError
from vad.evaluation.pixel.masks import read_masks, resize_maps, resize_masks, video_masks
from vad.evaluation.pixel.regions import (
    RegionTrackCriteria,
    fp_curve_area,
    ground_truth_regions,
    region_track_criteria,
    sweep_thresholds,
    threshold_sweep,
)
from vad.evaluation.pixel.roc import PixelROC, frame_criterion, pixel_auc, ucsd_frame_scores, ucsd_pixel_level


def square(n: int, h: int, w: int, boxes: dict[int, list[tuple[int, int, int, int]]]) -> np.ndarray:
    """(n, h, w) bool with the boxes (y0, y1, x0, x1) of each frame set."""
    masks = np.zeros((n, h, w), dtype=bool)
    for f, items in boxes.items():
        for y0, y1, x0, x1 in items:
            masks[f, y0:y1, x0:x1] = True
    return masks


def two_tracks() -> np.ndarray:
    """8 frames 12x16: a 3x3 blob moving right 1 px per frame in frames 1-4, another 2x4 still one in frames 5-7."""
    boxes = {f: [(2, 5, f, f + 3)] for f in range(1, 5)}
    boxes.update({f: [(8, 10, 10, 14)] for f in range(5, 8)})
    return square(8, 12, 16, boxes)


# ---------------------------------------------------------------------------------------------------------------
# Reading and resizing
# ---------------------------------------------------------------------------------------------------------------


def test_read_masks_from_bmp_folder_npy_and_vol_label_mat(tmp_path: Path) -> None:
    masks = square(4, 10, 12, {1: [(1, 4, 2, 6)], 2: [(5, 9, 0, 3), (0, 2, 10, 12)]})
    folder = tmp_path / "Test001_gt"
    for i, mask in enumerate(masks):
        write_image(folder / f"{i + 1:03d}.bmp", (mask[:, :, None] * 255).astype(np.uint8))
    (folder / "._001.bmp").write_bytes(b"\x00\x05\x16\x07junk")  # macOS fork shipped in the UCSD archive
    np.save(tmp_path / "01_0014.npy", masks.astype(np.uint8))
    write_vol_label(tmp_path / "1_label.mat", masks)

    sources = [mask_images(folder), MaskSource(npy=tmp_path / "01_0014.npy"), MaskSource(mat=tmp_path / "1_label.mat")]
    for source in sources:
        found = read_masks(source)
        assert found.dtype == bool
        assert found.shape == (4, 10, 12)
        np.testing.assert_array_equal(found, masks)
        np.testing.assert_array_equal(read_masks(source, 4), masks)
        with pytest.raises(DataError, match=r": 4 pixel masks but the video has 5 frames"):
            read_masks(source, 5)


def test_read_masks_refuses_masks_of_different_sizes(tmp_path: Path) -> None:
    write_image(tmp_path / "gt" / "1.bmp", np.zeros((6, 8, 1), np.uint8))
    write_image(tmp_path / "gt" / "2.bmp", np.zeros((6, 9, 1), np.uint8))
    with pytest.raises(DataError, match=r"pixel masks of different sizes \[\(6, 8\), \(6, 9\)\]"):
        read_masks(mask_images(tmp_path / "gt"))


def test_video_masks_reads_an_indexed_video(tmp_path: Path) -> None:
    masks = square(3, 5, 6, {0: [(1, 3, 1, 3)]})
    np.save(tmp_path / "v.npy", masks.astype(np.uint8))
    source = FrameSource(images=(tmp_path / "f0.png", tmp_path / "f1.png", tmp_path / "f2.png"))
    np.testing.assert_array_equal(video_masks(Video("v", source, masks=MaskSource(npy=tmp_path / "v.npy"))), masks)
    assert video_masks(Video("v", source)) is None
    short = FrameSource(images=(tmp_path / "f0.png",))
    with pytest.raises(DataError, match=r"3 pixel masks but the video has 1 frames"):
        video_masks(Video("v", short, masks=MaskSource(npy=tmp_path / "v.npy")))


def test_resize_masks_nearest_with_aligned_pixel_centres() -> None:
    masks = np.array([[[True, False], [False, True]]])
    up = resize_masks(masks, (4, 4))
    np.testing.assert_array_equal(up, np.repeat(np.repeat(masks, 2, axis=1), 2, axis=2))
    row = np.array([[[False, True, False, False]]])
    np.testing.assert_array_equal(resize_masks(row, (1, 2)), [[[True, False]]])  # source columns 1 and 3
    assert resize_masks(row.astype(np.uint8) * 255, (1, 2)).dtype == bool


def test_resize_maps_bilinear_and_nearest() -> None:
    ramp = np.array([[[0.0, 1.0]]])
    np.testing.assert_allclose(resize_maps(ramp, (1, 4)), [[[0.0, 0.25, 0.75, 1.0]]])
    np.testing.assert_allclose(resize_maps(ramp, (2, 4))[0, 1], [0.0, 0.25, 0.75, 1.0])
    np.testing.assert_array_equal(resize_maps(ramp, (1, 4), "nearest"), [[[0.0, 0.0, 1.0, 1.0]]])
    constant = np.full((2, 5, 7), 0.3, dtype=np.float32)
    out = resize_maps(constant, (12, 9))
    assert out.shape == (2, 12, 9)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 0.3, rtol=1e-6)
    with pytest.raises(ValueError, match=r"interpolation must be 'linear' or 'nearest'"):
        resize_maps(ramp, (1, 4), "cubic")


# ---------------------------------------------------------------------------------------------------------------
# Pixel AUC
# ---------------------------------------------------------------------------------------------------------------


def test_pixel_auc_perfect_and_inverted_maps() -> None:
    masks = two_tracks()
    perfect = masks.astype(np.float32)
    assert pixel_auc(perfect, masks) == 1.0
    assert pixel_auc(1.0 - perfect, masks) == 0.0
    assert pixel_auc(perfect, masks, anomalous_frames_only=True) == 1.0
    assert pixel_auc(perfect, masks, bins=10) == 1.0


def test_pixel_auc_hand_example_with_ties() -> None:
    # anomalous 0.9, 0.4; normal 0.5, 0.1, 0.4: 0.9 beats all 3, 0.4 beats 0.1 and ties 0.4 -> (3 + 1.5) / 6
    maps = np.array([[[0.9, 0.4, 0.5, 0.1, 0.4]]])
    masks = np.array([[[True, True, False, False, False]]])
    assert pixel_auc(maps, masks) == pytest.approx(0.75, abs=1e-12)


def test_pixel_auc_anomalous_frames_only() -> None:
    # frame 0 is normal with a high 0.9; frame 1's anomalous pixel 0.8 beats 4 of 5 normal pixels overall,
    # and both normal pixels of its own frame
    maps = np.array([[[0.9, 0.2, 0.2]], [[0.8, 0.3, 0.1]]])
    masks = np.array([[[False, False, False]], [[True, False, False]]])
    assert pixel_auc(maps, masks) == pytest.approx(0.8, abs=1e-12)
    assert pixel_auc(maps, masks, anomalous_frames_only=True) == 1.0


def test_pixel_auc_matches_sklearn_pooled_over_videos_and_streamed() -> None:
    rng = np.random.default_rng(0)
    videos = [(rng.integers(0, 7, size=(n, 6, 5)) / 6.0, rng.random((n, 6, 5)) < 0.3) for n in (3, 4)]
    maps, masks = [m for m, _ in videos], [g for _, g in videos]
    expected = roc_auc_score(np.concatenate([g.ravel() for g in masks]), np.concatenate([m.ravel() for m in maps]))
    assert pixel_auc(maps, masks) == pytest.approx(expected, abs=1e-12)
    streamed = PixelROC()
    for m, g in videos:
        for f in range(len(m)):
            streamed.update(m[f : f + 1], g[f : f + 1])
    assert streamed.auc() == pytest.approx(expected, abs=1e-12)
    assert streamed.n_positive == sum(int(g.sum()) for g in masks)
    # 7 levels 0, 1/6, ..., 1 fall into 7 different bins of [0, 1]: binning loses nothing
    assert pixel_auc(maps, masks, bins=7) == pytest.approx(expected, abs=1e-12)
    # 2 bins merge levels 0..2/6 and 3/6..1 into ties: a different (coarser) number
    assert pixel_auc(maps, masks, bins=2) != pytest.approx(expected, abs=1e-6)


def test_pixel_rocs_of_parts_merge_into_the_whole_and_bound_their_binning_error() -> None:
    rng = np.random.default_rng(3)
    maps, masks = rng.random((6, 5, 7)), rng.random((6, 5, 7)) < 0.2
    for bins, value_range in ((None, None), (50, (0.0, 1.0))):
        whole = PixelROC(bins=bins, value_range=value_range)
        whole.update(maps, masks)
        first, second = PixelROC(bins=bins, value_range=value_range), PixelROC(bins=bins, value_range=value_range)
        first.update(maps[:4], masks[:4])
        second.update(maps[4:], masks[4:])
        first.merge(second)
        assert first.auc() == whole.auc()
        assert (first.n_positive, first.n_negative) == (whole.n_positive, whole.n_negative)
    exact = roc_auc_score(masks.ravel(), maps.ravel())
    assert whole.bin_error_bound > 0  # 50 bins of 210 random values: anomalous and normal pixels share bins
    assert abs(whole.auc() - exact) <= whole.bin_error_bound
    coarse = PixelROC(bins=2, value_range=(0.0, 1.0))
    coarse.update(maps, masks)
    assert abs(coarse.auc() - exact) <= coarse.bin_error_bound
    assert coarse.bin_error_bound > whole.bin_error_bound  # coarser bins, looser bound
    unbinned = PixelROC()
    unbinned.update(maps, masks)
    assert unbinned.bin_error_bound == 0.0
    with pytest.raises(ValueError, match=r"merge: the two PixelROCs differ"):
        unbinned.merge(whole)


def test_pixel_auc_single_class_is_nan_with_a_warning() -> None:
    maps = np.zeros((2, 3, 3))
    with pytest.warns(RuntimeWarning, match=r"0 positives and 18 negatives"):
        assert np.isnan(pixel_auc(maps, np.zeros((2, 3, 3), dtype=bool)))


def test_pixel_metrics_refuse_mismatched_or_non_finite_maps() -> None:
    with pytest.raises(ValueError, match=r"maps \(2, 4, 4\) and masks \(2, 3, 3\) differ; resize the maps"):
        pixel_auc(np.zeros((2, 4, 4)), np.zeros((2, 3, 3), dtype=bool))
    bad = np.zeros((1, 2, 2))
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite"):
        pixel_auc(bad, np.ones((1, 2, 2), dtype=bool))
    with pytest.raises(ValueError, match=r"2 videos of maps but 1 videos of masks"):
        region_track_criteria([np.zeros((1, 2, 2))] * 2, [np.ones((1, 2, 2), dtype=bool)], thresholds=[0.5])


# ---------------------------------------------------------------------------------------------------------------
# UCSD pixel-level criterion
# ---------------------------------------------------------------------------------------------------------------


def test_ucsd_criterion_hand_example() -> None:
    maps = np.array(
        [
            [[0.9, 0.8, 0.7, 0.2, 0.1]],  # all 5 anomalous: 40 % = 2 pixels -> the 2nd largest, 0.8
            [[0.85, 0.1, 0.1, 0.1, 0.1]],  # normal: its maximum, 0.85
            [[0.3, 0.6, 0.95, 0.95, 0.95]],  # 2 anomalous: ceil(0.8) = 1 -> 0.6; the 0.95 elsewhere does not count
            [[0.5, 0.4, 0.0, 0.0, 0.0]],  # normal: 0.5
        ]
    )
    masks = np.zeros(maps.shape, dtype=bool)
    masks[0] = True
    masks[2, 0, :2] = True
    scores, labels = ucsd_frame_scores(maps, masks)
    np.testing.assert_array_equal(scores, [0.8, 0.85, 0.6, 0.5])
    np.testing.assert_array_equal(labels, [1, 0, 1, 0])
    result = ucsd_pixel_level(maps, masks)
    assert result.auc == pytest.approx(0.5, abs=1e-12)  # 0.8 and 0.6 beat 0.5, lose to 0.85
    assert result.eer == pytest.approx(0.5, abs=1e-12)
    # 50 % of 5 pixels = 3 -> the 3rd largest
    np.testing.assert_array_equal(ucsd_frame_scores(maps, masks, coverage=0.5)[0], [0.7, 0.85, 0.6, 0.5])


def test_ucsd_criterion_from_scores_computed_in_parts() -> None:
    rng = np.random.default_rng(4)
    maps, masks = rng.random((9, 4, 6)), rng.random((9, 4, 6)) < 0.3
    masks[::3] = False  # some normal frames
    parts = [ucsd_frame_scores(maps[a : a + 4], masks[a : a + 4]) for a in range(0, 9, 4)]
    pooled = frame_criterion([s for s, _ in parts], [y for _, y in parts])
    whole = ucsd_pixel_level(maps, masks)
    assert pooled.auc == whole.auc
    np.testing.assert_array_equal(pooled.scores, whole.scores)
    with pytest.raises(ValueError, match=r"2 frame scores but 3 labels"):
        frame_criterion([np.zeros(2)], [np.zeros(3)])


def test_ucsd_criterion_perfect_and_inverted_maps() -> None:
    masks = two_tracks()
    assert ucsd_pixel_level(masks.astype(float), masks).auc == 1.0
    # inverted: every normal frame scores 1 (everything lit), every anomalous frame 0 on its own pixels
    assert ucsd_pixel_level(1.0 - masks, masks).auc == 0.0


# ---------------------------------------------------------------------------------------------------------------
# Ground-truth regions and tracks
# ---------------------------------------------------------------------------------------------------------------


def test_regions_are_8_connected_and_tracks_26_connected_in_space_time() -> None:
    masks = np.zeros((5, 6, 6), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal neighbours: one region
    masks[0, 4, 4] = True  # a second region of frame 0
    masks[1, 2, 2] = True  # touches (1, 1) of frame 0 diagonally in space-time: continues the first track
    masks[3, 2, 2] = True  # after an empty frame: a new track
    masks[4, 5, 5] = True  # not touching (3, 2, 2) in frame 4 + frame 3: another track
    regions = ground_truth_regions(masks)
    np.testing.assert_array_equal(regions.offsets, [0, 2, 3, 3, 4, 5])
    np.testing.assert_array_equal(regions.area, [2, 1, 1, 1, 1])
    assert regions.n_tracks == 4
    np.testing.assert_array_equal(np.bincount(regions.track), [2, 1, 1, 1])
    assert regions.track[0] == regions.track[2]
    assert len(set(regions.track[[1, 3, 4]].tolist())) == 3


def test_given_track_ids_split_touching_objects() -> None:
    masks = square(2, 4, 6, {0: [(0, 2, 0, 4)], 1: [(0, 2, 1, 5)]})
    tracks = np.zeros(masks.shape, dtype=np.int64)
    tracks[:, :, :3] = 7
    tracks[:, :, 3:] = 9
    tracks[~masks] = 0
    assert ground_truth_regions(masks).n_regions == 2  # one connected region per frame, one track
    assert ground_truth_regions(masks).n_tracks == 1
    regions = ground_truth_regions(masks, tracks)
    assert regions.n_regions == 4
    np.testing.assert_array_equal(regions.track, [0, 1, 0, 1])
    np.testing.assert_array_equal(regions.track_length, [2, 2])
    tracks[0, 0, 0] = 0
    with pytest.raises(ValueError, match=r"nonzero exactly where the masks are set"):
        ground_truth_regions(masks, tracks)


# ---------------------------------------------------------------------------------------------------------------
# RBDC / TBDC
# ---------------------------------------------------------------------------------------------------------------


def test_rbdc_tbdc_perfect_map_is_one_and_inverted_map_zero() -> None:
    masks = two_tracks()
    result = region_track_criteria([masks.astype(float)], [masks], thresholds=11)
    np.testing.assert_allclose(result.thresholds, np.linspace(1.0, 0.0, 11))
    assert (result.n_regions, result.n_tracks, result.n_frames) == (7, 2, 8)
    assert result.rbdc == 1.0
    assert result.tbdc == 1.0
    np.testing.assert_array_equal(result.false_positives[:-1], 0)
    np.testing.assert_array_equal(result.regions_detected[:-1], 7)
    # at the lowest threshold every frame is one region of the whole frame: a false positive in each of the 8
    assert result.false_positives[-1] == 8
    inverted = region_track_criteria([1.0 - masks], [masks], thresholds=11)
    assert inverted.rbdc == 0.0
    assert inverted.tbdc == 0.0
    np.testing.assert_array_equal(inverted.regions_detected, 0)


def iou_case(inside: int, outside: int, gt_pixels: int) -> np.ndarray:
    """A 1-frame map lighting ``inside`` pixels of a row-shaped ground-truth region and ``outside`` pixels right
    after it, all in one connected run."""
    maps = np.zeros((1, 3, 40))
    maps[0, 1, gt_pixels - inside : gt_pixels + outside] = 1.0
    return maps


@pytest.mark.parametrize(
    ("gt_pixels", "inside", "outside", "detected"),
    [
        (10, 1, 0, True),  # IoU 1/10 = beta exactly: detected
        (10, 1, 1, False),  # IoU 1/11 just below: missed, and the detection is a false positive
        (10, 2, 1, True),  # IoU 2/11 above
        (20, 2, 1, False),  # IoU 2/21 = 0.0952 just below
        (20, 2, 0, True),  # IoU 2/20 = 0.1
    ],
)
def test_region_detected_when_iou_reaches_beta(gt_pixels: int, inside: int, outside: int, detected: bool) -> None:
    masks = np.zeros((1, 3, 40), dtype=bool)
    masks[0, 1, :gt_pixels] = True
    result = region_track_criteria([iou_case(inside, outside, gt_pixels)], [masks], thresholds=[0.5], beta=0.1)
    assert result.regions_detected.tolist() == [int(detected)]
    assert result.false_positives.tolist() == [int(not detected)]
    assert result.rbdc == (1.0 if detected else 0.0)


def test_track_detected_in_one_of_ten_frames_against_alpha() -> None:
    masks = square(10, 6, 6, {f: [(1, 3, 1, 3)] for f in range(10)})  # one still object: 1 track of 10 regions
    maps = np.zeros(masks.shape)
    maps[3] = masks[3]  # detected in frame 3 only
    at_alpha = region_track_criteria([maps], [masks], thresholds=[0.5], alpha=0.1)
    assert (at_alpha.n_tracks, at_alpha.n_regions) == (1, 10)
    assert at_alpha.tracks_detected.tolist() == [1]  # 1/10 >= 0.1
    assert at_alpha.tbdc == 1.0
    assert at_alpha.rbdc == pytest.approx(0.1, abs=1e-12)  # 1 of 10 regions, no false positive, flat to 1
    above = region_track_criteria([maps], [masks], thresholds=[0.5], alpha=0.11)
    assert above.tracks_detected.tolist() == [0]
    assert above.tbdc == 0.0
    two_frames = maps.copy()
    two_frames[7] = masks[7]
    assert region_track_criteria([two_frames], [masks], thresholds=[0.5], alpha=0.2).tracks_detected.tolist() == [1]


def test_false_positives_per_frame_counted_exactly() -> None:
    masks = square(4, 8, 8, {0: [(0, 2, 0, 2)]})
    maps = np.zeros(masks.shape)
    maps[0, 0:2, 0:2] = 1.0  # the ground truth, detected exactly
    maps[0, 5:7, 5:7] = 1.0  # a false positive in frame 0
    maps[1, 0, 0] = maps[1, 1, 1] = 1.0  # diagonal neighbours: one region, one false positive
    maps[1, 4, 6] = 1.0  # a second false positive in frame 1
    maps[3, 7, 0:3] = 1.0  # one in frame 3; frame 2 has none
    maps[1, 6, 2] = 0.4  # below the threshold: nothing
    result = region_track_criteria([maps], [masks], thresholds=[0.5])
    assert result.false_positives.tolist() == [4]
    assert result.fp_per_frame.tolist() == [1.0]
    assert result.region_rate.tolist() == [1.0]
    assert result.rbdc == pytest.approx(0.5, abs=1e-12)  # the straight line from (0, 0) to (1, 1)
    lower = region_track_criteria([maps], [masks], thresholds=[0.5, 0.3])
    assert lower.false_positives.tolist() == [4, 5]


def test_tracks_do_not_join_across_videos_and_streaming_matches() -> None:
    first = square(3, 6, 6, {2: [(1, 3, 1, 3)]})
    second = square(3, 6, 6, {0: [(1, 3, 1, 3)]})
    maps = [first.astype(float), np.zeros(second.shape)]
    result = region_track_criteria(maps, [first, second], thresholds=[0.5])
    assert (result.n_tracks, result.n_regions, result.n_frames) == (2, 2, 6)
    assert result.tracks_detected.tolist() == [1]
    assert result.tbdc == pytest.approx(0.5, abs=1e-12)
    streamed = RegionTrackCriteria([0.5])
    streamed.update(maps[0], first)
    streamed.update(maps[1], second)
    assert streamed.result().tbdc == result.tbdc


def test_region_track_counts_of_other_videos_merge() -> None:
    first, second = two_tracks(), square(3, 6, 6, {0: [(1, 3, 1, 3)], 1: [(2, 4, 2, 4)]})
    maps = [first * 0.7 + 0.1, second * 0.4]
    whole = region_track_criteria(maps, [first, second], thresholds=[0.9, 0.5, 0.3, 0.0])
    parts = [RegionTrackCriteria([0.9, 0.5, 0.3, 0.0]) for _ in range(2)]
    parts[0].update(maps[0], first)
    parts[1].update(maps[1], second)
    parts[0].merge(parts[1])
    merged = parts[0].result()
    assert (merged.rbdc, merged.tbdc) == (whole.rbdc, whole.tbdc)
    assert (merged.n_frames, merged.n_regions, merged.n_tracks) == (whole.n_frames, whole.n_regions, whole.n_tracks)
    np.testing.assert_array_equal(merged.false_positives, whole.false_positives)
    with pytest.raises(ValueError, match=r"merge: the two RegionTrackCriteria differ"):
        parts[0].merge(RegionTrackCriteria([0.5]))


def test_fp_curve_area_by_hand() -> None:
    assert fp_curve_area(np.array([0.4, 0.5]), np.array([0.6, 0.8])) == pytest.approx(0.59, abs=1e-12)
    # non-monotone: the point (0.6, 0.4) is dominated by (0.2, 0.8), whose rate carries on
    assert fp_curve_area(np.array([0.2, 0.6]), np.array([0.8, 0.4])) == pytest.approx(0.72, abs=1e-12)
    # past 1 false positive per frame: interpolated at 1 (0.75), the rest ignored
    assert fp_curve_area(np.array([0.5, 1.5]), np.array([0.5, 1.0])) == pytest.approx(0.4375, abs=1e-12)
    assert fp_curve_area(np.array([0.0]), np.array([1.0])) == 1.0


def test_sweep_and_unique_thresholds() -> None:
    maps = np.array([[[0.0, 0.5], [0.25, 1.0]]])
    np.testing.assert_allclose(sweep_thresholds(maps, 5), [1.0, 0.75, 0.5, 0.25, 0.0])
    np.testing.assert_allclose(threshold_sweep(0.0, 1.0, 5), [1.0, 0.75, 0.5, 0.25, 0.0])
    np.testing.assert_array_equal(threshold_sweep(0.5, 0.5, 5), [0.5])
    masks = maps >= 0.5
    result = region_track_criteria(maps, masks, thresholds="unique")
    np.testing.assert_array_equal(result.thresholds, [1.0, 0.5, 0.25, 0.0])
    # at 1.0: the single lit pixel is a 1-pixel region of IoU 1/2 with the 2-pixel ground truth
    assert result.regions_detected.tolist() == [1, 1, 1, 1]
    assert result.false_positives.tolist() == [0, 0, 0, 0]
