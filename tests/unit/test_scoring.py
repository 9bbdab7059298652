"""The frame-level protocol: normalisation, fusion, dropping and metrics on hand-checked examples."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from vad.errors import ConfigError
from vad.evaluation.fusion import check_weights, fuse, minmax
from vad.evaluation.protocol import evaluate
from vad.evaluation.records import FrameRecord, VideoSignals, group_columns, group_records, videos_from_records
from vad.evaluation.smoothing import smooth


def video(name: str, values, labels, signal: str = "s", frames=None) -> VideoSignals:
    n = len(values)
    return VideoSignals(name, np.arange(n) if frames is None else frames, labels, {signal: np.asarray(values, float)})


def test_minmax_maps_to_unit_range():
    np.testing.assert_array_equal(minmax([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])


@pytest.mark.parametrize("values", [[5.0, 5.0, 5.0], [1.0, np.inf, 2.0], [1.0, np.nan], [-1e308, 1e308], []])
def test_minmax_guard_returns_zeros(values):
    out = minmax(values)
    np.testing.assert_array_equal(out, np.zeros(len(values)))


def test_hand_example_auc_ap_eer():
    # Positives 0.6, 1.0 vs negatives 0, 0.65: 3 of 4 pairs ranked right -> AUC 0.75. Ranked 1.0+, 0.65-, 0.6+, 0-:
    # AP = 0.5 * 1 + 0.5 * 2/3 = 5/6. The ROC passes through (FPR 0.5, TPR 0.5) where FPR = 1 - TPR -> EER 0.5.
    result = evaluate([video("v", [0.0, 0.65, 0.6, 1.0], [0, 0, 1, 1])], {"s": 1.0})
    assert result.auc_micro == pytest.approx(0.75, abs=1e-12)
    assert result.ap == pytest.approx(5 / 6, abs=1e-12)
    assert result.eer == pytest.approx(0.5, abs=1e-12)
    assert result.auc_macro == pytest.approx(0.75, abs=1e-12)
    assert result.per_video == {"v": pytest.approx(0.75)}
    assert (result.n_frames, result.n_anomalous, result.n_dropped) == (4, 2, 0)
    np.testing.assert_allclose(result.videos[0].score, [0.0, 0.65, 0.6, 1.0])


def test_eer_interpolates_along_a_diagonal_segment():
    # ROC (0,0) -> (0,0.5) -> (0.5,1) -> (1,1): on the tie segment FPR = 0.5 t, 1 - TPR = 0.5 - 0.5 t -> EER 0.25.
    result = evaluate([video("v", [0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1])], {"s": 1.0})
    assert result.eer == pytest.approx(0.25, abs=1e-12)


def test_constant_signal_video_scores_zero_without_nan():
    videos = [video("a", [3.0, 3.0, 3.0], [0, 1, 1]), video("b", [1.0, 5.0, 2.0], [0, 1, 0])]
    for weight in (1.0, -1.0):
        result = evaluate(videos, {"s": weight})
        np.testing.assert_array_equal(result.videos[0].score, [0.0, 0.0, 0.0])
        assert np.isfinite(result.auc_micro)
        assert result.per_video["a"] == 0.5  # all tied within the video


def test_macro_auc_excludes_single_class_videos():
    # a: g = [0, 1/3, 2/3, 1], positives 1/3 and 1 vs negatives 0 and 2/3 -> 3/4. b: positives 1, 2 below the
    # negative 3 -> 0. c: all anomalous -> excluded. Macro = (0.75 + 0) / 2.
    videos = [
        video("a", [0.0, 1.0, 2.0, 3.0], [0, 1, 0, 1]),
        video("b", [3.0, 1.0, 2.0], [0, 1, 1]),
        video("c", [0.3, 0.1], [1, 1]),
    ]
    result = evaluate(videos, {"s": 1.0})
    assert result.auc_macro == pytest.approx(0.375, abs=1e-12)
    assert result.per_video == {"a": pytest.approx(0.75), "b": 0.0, "c": None}
    assert result.single_class_videos == ["c"]
    assert result.n_macro_videos == 2


def test_nonfinite_frames_dropped_with_their_labels_and_counted():
    values = [0.0, np.nan, 1.0, np.inf, 2.0]
    other = np.array([7.0, 7.0, 7.0, 7.0, np.nan])  # unweighted: its NaN does not drop frame 4
    v = VideoSignals("v", np.arange(5), [0, 1, 1, 0, 1], {"s": np.array(values), "other": other})
    result = evaluate([v], {"s": 1.0})
    kept = result.videos[0]
    np.testing.assert_array_equal(kept.frames, [0, 2, 4])
    np.testing.assert_array_equal(kept.labels, [0, 1, 1])
    np.testing.assert_array_equal(kept.score, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(kept.signals["other"], [7.0, 7.0, np.nan])
    assert (result.dropped_nonfinite, result.dropped_missing, result.n_dropped) == (2, 0, 2)
    assert result.auc_micro == 1.0


def test_frames_absent_from_records_take_full_labels_and_count_as_dropped():
    # A t=2 predictor scores frames 2..5; labels come from the full per-video labels; video "z" was never scored.
    full = {"a": np.array([1, 1, 0, 0, 1, 1], np.uint8), "z": np.zeros(3, np.uint8)}
    v = VideoSignals("a", np.arange(2, 6), None, {"psnr": np.array([30.0, 29.0, 20.0, 22.0])})
    result = evaluate([v], {"psnr": -1.0}, full_labels=full)
    np.testing.assert_array_equal(result.videos[0].labels, [0, 0, 1, 1])
    assert result.dropped_missing == 2 + 3
    assert result.missing_videos == ["z"]
    assert result.auc_micro == 1.0


def test_record_labels_must_match_full_labels():
    v = VideoSignals("a", np.arange(1, 4), [0, 1, 1], {"s": np.array([1.0, 2.0, 3.0])})
    with pytest.raises(ValueError, match=r"'a' frame 3"):
        evaluate([v], {"s": 1.0}, full_labels={"a": np.array([0, 0, 1, 0])})


def test_skipped_videos_excluded():
    videos = [video("a", [0.0, 1.0], [0, 1]), video("b", [1.0, 0.0], [0, 1])]
    result = evaluate(videos, {"s": 1.0}, skip_videos=["b"], full_labels={"b": np.array([0, 1])})
    assert [v.name for v in result.videos] == ["a"]
    assert result.skipped_videos == ["b"]
    assert (result.auc_micro, result.n_frames, result.dropped_missing, result.missing_videos) == (1.0, 2, 0, [])
    with pytest.raises(ValueError, match="unknown videos"):
        evaluate(videos, {"s": 1.0}, skip_videos=["typo"])


def test_fusion_reproduces_mnad_formula():
    rng = np.random.default_rng(0)
    psnr, dist = rng.uniform(20, 40, 50), rng.uniform(0, 2, 50)

    def g(x):
        return (x - x.min()) / (x.max() - x.min())

    expected = 0.6 * (1 - g(psnr)) + 0.4 * g(dist)
    fused = fuse({"psnr": psnr, "feature_distance": dist}, {"psnr": -0.6, "feature_distance": 0.4})
    np.testing.assert_allclose(fused, expected, rtol=0, atol=1e-15)
    assert fused.min() >= 0
    assert fused.max() <= 1
    # Weights that do not sum to one are normalised by sum |w|: the same score.
    scaled = fuse({"psnr": psnr, "feature_distance": dist}, {"psnr": -3.0, "feature_distance": 2.0})
    np.testing.assert_allclose(scaled, expected, rtol=0, atol=1e-12)


def test_raw_fusion_is_the_weighted_sum():
    raw = fuse({"a": np.array([1.0, 2.0]), "b": np.array([10.0, 0.0])}, {"a": -2.0, "b": 0.5}, normalise=False)
    np.testing.assert_array_equal(raw, [3.0, -4.0])


def test_signed_weight_polarity():
    # Anomalous frames have a low PSNR: weight -1 ranks them first, +1 ranks them last.
    videos = [video("a", [35.0, 34.0, 21.0, 20.0], [0, 0, 1, 1], signal="psnr")]
    assert evaluate(videos, {"psnr": -1.0}).auc_micro == 1.0
    assert evaluate(videos, {"psnr": 1.0}).auc_micro == 0.0


def test_raw_auc_differs_when_per_video_offsets_matter():
    # Within each video the anomaly is the higher value, but video b sits 10 higher: normalised -> [0, 1, 0, 1]
    # (AUC 1); raw -> positives 1, 11 vs negatives 0, 10: 3 of 4 pairs -> 0.75.
    videos = [video("a", [0.0, 1.0], [0, 1]), video("b", [10.0, 11.0], [0, 1])]
    result = evaluate(videos, {"s": 1.0})
    assert result.auc_micro == 1.0
    assert result.auc_micro_raw == pytest.approx(0.75, abs=1e-12)
    assert evaluate(videos, {"s": 1.0}, normalise=False).auc_micro == pytest.approx(0.75, abs=1e-12)


def test_single_class_overall_gives_nan_with_warning():
    with pytest.warns(RuntimeWarning) as caught:
        result = evaluate([video("a", [0.0, 1.0], [0, 0]), video("b", [2.0, 1.0], [0, 0])], {"s": 1.0})
    messages = [str(w.message) for w in caught]
    assert any("single class (4 frames, 0 anomalous)" in m for m in messages)
    assert any("macro AUC is undefined" in m for m in messages)
    assert [math.isnan(x) for x in (result.auc_micro, result.eer, result.ap)] == [True, True, True]
    assert math.isnan(result.auc_macro)
    assert result.single_class_videos == ["a", "b"]
    assert result.to_dict()["auc_micro"] is None


def test_unlabelled_videos_give_scores_and_no_metrics():
    result = evaluate([video("a", [0.0, 2.0, 1.0], None)], {"s": 1.0})
    np.testing.assert_array_equal(result.videos[0].score, [0.0, 1.0, 0.5])
    assert not result.labelled
    assert math.isnan(result.auc_micro)
    assert result.per_video == {"a": None}


@pytest.mark.parametrize(
    ("weights", "match"),
    [({"ssim": 1.0}, r"unknown signal.*'ssim'.*\['psnr', 'feature_distance'\]"), ({}, "empty or all zero")],
)
def test_bad_weights_raise_config_error(weights, match):
    with pytest.raises(ConfigError, match=match):
        check_weights(weights, ["psnr", "feature_distance"])


def test_all_zero_weights_raise_config_error():
    with pytest.raises(ConfigError, match="all zero"):
        evaluate([video("a", [0.0, 1.0], [0, 1])], {"s": 0.0})


def test_zero_weights_are_skipped():
    assert check_weights({"psnr": -1, "feature_distance": 0}, ["psnr", "feature_distance"]) == {"psnr": -1.0}


def records_in_order():
    return [
        FrameRecord("2", 4, {"psnr": 30.0, "d": 0.1}, 0),
        FrameRecord("2", 5, {"psnr": 20.0, "d": 0.9}, 1),
        FrameRecord("10", 4, {"psnr": 25.0, "d": 0.5}, 1),
        FrameRecord("10", 5, {"psnr": 28.0, "d": 0.2}, 0),
        FrameRecord("10", 6, {"psnr": 27.0, "d": 0.3}, 0),
    ]


def test_group_records_is_order_independent():
    records = records_in_order()
    shuffled = [records[i] for i in (4, 1, 2, 0, 3)]
    for rows in (records, shuffled):
        videos = group_records(rows)
        assert [v.name for v in videos] == ["2", "10"]  # natural order, not "10" < "2"
        np.testing.assert_array_equal(videos[1].frames, [4, 5, 6])
        np.testing.assert_array_equal(videos[1].labels, [1, 0, 0])
        np.testing.assert_array_equal(videos[1].signals["psnr"], [25.0, 28.0, 27.0])
    assert [v.name for v in group_records(shuffled, video_order=["10", "2"])] == ["10", "2"]


def test_group_columns_matches_group_records():
    records = records_in_order()[::-1]
    videos = group_columns(
        videos=[r.video for r in records],
        frames=np.array([r.frame for r in records]),
        signals={"psnr": np.array([r.signals["psnr"] for r in records])},
        labels=np.array([r.label for r in records]),
    )
    np.testing.assert_array_equal(videos[0].signals["psnr"], [30.0, 20.0])
    np.testing.assert_array_equal(videos[1].labels, [1, 0, 0])


def test_duplicate_records_rejected():
    records = [*records_in_order(), FrameRecord("10", 5, {"psnr": 1.0, "d": 1.0}, 0)]
    with pytest.raises(ValueError, match=r"video '10' frame 5 appears twice"):
        group_records(records)


def test_records_of_unknown_video_rejected():
    with pytest.raises(ValueError, match=r"missing from video_order: \['10'\]"):
        group_records(records_in_order(), video_order=["2"])


@dataclass(frozen=True)
class InfoRow:
    name: str
    num_frames: int
    labels: np.ndarray | None
    skipped: bool


def test_videos_from_records_counts_unscored_frames_and_skips():
    # A t=2 predictor: "01" scored from frame 2, "02" is shorter than a clip (skipped), "03" got no records at all.
    info = [
        InfoRow("01", 6, np.array([0, 0, 0, 1, 1, 0], np.uint8), False),
        InfoRow("02", 2, np.array([1, 1], np.uint8), True),
        InfoRow("03", 4, np.zeros(4, np.uint8), False),
    ]
    records = {
        "video_id": np.array([0, 0, 0, 0]),
        "index": np.array([5, 2, 4, 3]),
        "psnr": np.array([33.0, 30.0, 21.0, 20.0]),
    }
    videos = videos_from_records(records, info, signals=["psnr"])
    assert [(v.name, v.num_frames, v.skipped) for v in videos] == [("01", 6, False), ("02", 2, True), ("03", 4, False)]
    np.testing.assert_array_equal(videos[0].frames, [2, 3, 4, 5])
    np.testing.assert_array_equal(videos[0].labels, [0, 1, 1, 0])
    result = evaluate(videos, {"psnr": -1})
    assert [v.name for v in result.videos] == ["01"]
    assert (result.skipped_videos, result.missing_videos, result.dropped_missing) == (["02"], ["03"], 2 + 4)
    assert result.auc_micro == 1.0
    with pytest.raises(ValueError, match="outside the 3 test videos"):
        videos_from_records({**records, "video_id": np.array([0, 0, 0, 3])}, info)


def test_to_dict_reports_protocol():
    result = evaluate(
        [video("a", [0.0, 1.0, 2.0], [0, 1, 1], signal="psnr")], {"psnr": -1}, label_source="ped2.mat (FFP gt)"
    )
    d = result.to_dict()
    assert d["weights"] == {"psnr": -1.0}
    assert d["normalisation"] == "per-video min-max"
    assert d["label_source"] == "ped2.mat (FFP gt)"
    assert (d["auc_micro"], d["frames"], d["anomalous"], d["per_video_auc"]) == (0.0, 3, 2, {"a": 0.0})


def test_smooth_is_a_normalised_gaussian_with_repeated_ends():
    # sigma 1: taps exp(-k^2 / 2) for k = -3..3, normalised; an impulse in the middle returns the kernel itself
    taps = np.exp(-0.5 * np.arange(-3, 4) ** 2)
    taps /= taps.sum()
    impulse = np.zeros(11)
    impulse[5] = 1.0
    np.testing.assert_allclose(smooth(impulse, 1.0), np.concatenate([np.zeros(2), taps, np.zeros(2)]), atol=1e-15)
    # the first value is repeated past the start: a step at the start is pulled towards it, not towards 0
    step = np.array([1.0, 0, 0, 0, 0, 0, 0, 0])
    first = taps[3] + taps[:3].sum()  # the centre and the three padded copies of the first value
    assert smooth(step, 1.0)[0] == pytest.approx(first)
    np.testing.assert_allclose(smooth(np.full(6, 2.5), 3.0), np.full(6, 2.5))
    np.testing.assert_array_equal(smooth([3.0, 1.0, 2.0], 0), [3.0, 1.0, 2.0])
    assert smooth([4.0], 2.0).tolist() == [4.0]


def test_smoothing_is_recorded_and_changes_the_ranking():
    # one isolated spike on a normal frame beats the anomalous run without smoothing; smoothing spreads it out
    values = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.6, 0.6, 0.6, 0.6, 0.6, 0.0]
    labels = [0] * 8 + [1] * 5 + [0]
    raw = evaluate([video("a", values, labels)], {"s": 1})
    smoothed = evaluate([video("a", values, labels)], {"s": 1}, smoothing=1.0)
    assert raw.auc_micro < 1.0
    assert smoothed.auc_micro == 1.0
    assert (smoothed.smoothing, raw.smoothing) == (1.0, 0.0)
    assert smoothed.to_dict()["normalisation"] == "per-video min-max after a temporal Gaussian (sigma 1 frames)"
    assert smoothed.to_dict()["smoothing"] == 1.0
    # the smoothing acts before the normalisation and on the raw fusion alike
    np.testing.assert_allclose(smoothed.videos[0].score, minmax(smooth(values, 1.0)))
    np.testing.assert_allclose(
        fuse({"s": np.asarray(values)}, {"s": 2}, normalise=False, smoothing=1.0), 2 * smooth(values, 1.0)
    )


@pytest.mark.parametrize("sigma", [-1.0, math.nan, math.inf, "abc", True])
def test_bad_smoothing_raises_config_error(sigma):
    with pytest.raises(ConfigError, match=r"model\.smoothing="):
        evaluate([video("a", [0.0, 1.0], [0, 1])], {"s": 1}, smoothing=sigma)


PED2_LENGTHS = [180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180]


def test_real_ped2_labels_after_dropping_four_frames(shared_labels):
    # A t=4 predictor scores frames 4.. of each video; with the real Ped2 labels videos 08-11 are then all anomalous.
    flat = np.load(shared_labels / "frame_labels_ped2.npy").reshape(-1)
    names = [f"{i:02d}" for i in range(1, 13)]
    full = dict(zip(names, np.split(flat, np.cumsum(PED2_LENGTHS)[:-1]), strict=True))
    rng = np.random.default_rng(0)
    videos = []
    for name, labels in full.items():
        frames = np.arange(4, len(labels))
        psnr = 30.0 - 5.0 * labels[frames] + rng.normal(0, 1, len(frames))
        videos.append(VideoSignals(name, frames, None, {"psnr": psnr}))
    result = evaluate(videos, {"psnr": -1.0}, full_labels=full, label_source="frame_labels_ped2.npy")
    assert result.single_class_videos == ["08", "09", "10", "11"]
    assert (result.n_frames, result.dropped_missing) == (2010 - 48, 48)
    assert result.n_anomalous == 1648 - 7 * 4  # seven videos are anomalous from their first frame
    assert result.n_macro_videos == 8
    assert result.auc_micro > 0.9
