"""The max-patch anomaly score (AMC), per-video division by the max, and FFP's ``patch_max`` signal, on hand-made
maps and videos."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vad.errors import ConfigError
from vad.evaluation.fusion import divide_by_max, fuse
from vad.evaluation.patch import max_patch, patch_score, window_means
from vad.evaluation.protocol import evaluate
from vad.evaluation.records import VideoSignals
from vad.flow import LucasKanade
from vad.methods import losses
from vad.methods.ffp import FFP
from vad.reporting.summary import format_summary

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def hot_maps() -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 12, 12) flow and intensity error maps; windows 4x4 every 2 pixels (corners 0, 2, ..., 8).

    Flow: 3 in the window at (4, 2), 0 elsewhere; the overlapping windows hold at most half of it (1.5).
    Intensity: 10 in the window at (0, 8) (its own max window) and, in the flow's window, 0.5 on the top two rows
    and 0 on the bottom two (mean 0.25).
    """
    flow = torch.zeros(1, 12, 12)
    flow[0, 4:8, 2:6] = 3.0
    intensity = torch.zeros(1, 12, 12)
    intensity[0, 0:4, 8:12] = 10.0
    intensity[0, 4:6, 2:6] = 0.5
    return flow, intensity


# ---------------------------------------------------------------------------------------------- window means
def test_window_means_are_the_means_of_each_window() -> None:
    maps = torch.arange(2 * 10 * 12, dtype=torch.float32).reshape(2, 10, 12)
    means = window_means(maps, window=4, stride=3)
    # corners 0, 3, 6 in both directions: (10 - 4) // 3 + 1 = 3 rows, (12 - 4) // 3 + 1 = 3 columns
    expected = np.array(
        [[[maps[n, y : y + 4, x : x + 4].mean().item() for x in (0, 3, 6)] for y in (0, 3, 6)] for n in range(2)]
    )
    assert means.shape == (2, 3, 3)
    assert means.dtype == torch.float32
    np.testing.assert_array_equal(means.numpy(), expected)
    # (N, C, H, W): the channels are averaged first
    stacked = torch.stack([maps, 3 * maps], dim=1)
    np.testing.assert_array_equal(window_means(stacked, window=4, stride=3).numpy(), 2 * expected)


def test_window_larger_than_the_map_raises() -> None:
    with pytest.raises(ValueError, match=r"a 16x16 window does not fit in an error map of 8x12 pixels"):
        window_means(torch.zeros(1, 8, 12))
    with pytest.raises(ValueError, match=r"a 13x13 window does not fit in an error map of 12x20 pixels"):
        max_patch(torch.zeros(2, 3, 12, 20), window=13, stride=1)
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        window_means(torch.zeros(1, 8, 8), window=4, stride=0)
    with pytest.raises(ValueError, match=r"must be \(N, H, W\) or \(N, C, H, W\)"):
        window_means(torch.zeros(8, 8), window=4)


# ---------------------------------------------------------------------------------------------- max patch
def test_max_patch_takes_the_value_in_the_window_the_select_map_chose() -> None:
    flow, intensity = hot_maps()
    patch = max_patch(flow, intensity, window=4, stride=2)
    assert patch.corner.dtype == torch.int64
    assert patch.corner.tolist() == [[4, 2]]  # window index (2, 1) times the stride
    assert patch.select.tolist() == [3.0]
    assert patch.value.tolist() == [0.25]  # the intensity error in the FLOW's window ...
    own = max_patch(intensity, window=4, stride=2)
    assert (own.corner.tolist(), own.select.tolist()) == ([[0, 8]], [10.0])  # ... not in the intensity's own
    assert own.value.tolist() == own.select.tolist()  # no value map: the value is the selected mean


def test_channels_are_averaged_before_selecting() -> None:
    # Channel 0 has 4 in the window at (0, 0), channel 1 has 6 in the window at (4, 4): means 2 and 3.
    maps = torch.zeros(1, 2, 8, 8)
    maps[0, 0, 0:4, 0:4] = 4.0
    maps[0, 1, 4:8, 4:8] = 6.0
    values = torch.zeros(1, 3, 8, 8)
    values[0, :, 4:8, 4:8] = torch.tensor([1.0, 2.0, 6.0])[:, None, None]
    patch = max_patch(maps, values, window=4, stride=4)
    assert (patch.corner.tolist(), patch.select.tolist(), patch.value.tolist()) == ([[4, 4]], [3.0], [3.0])


def test_ties_go_to_the_first_window_in_row_major_order() -> None:
    constant = torch.stack([torch.full((16, 20), 0.25), torch.full((16, 20), 7.0)])
    patch = max_patch(constant, window=8, stride=4)
    assert patch.corner.tolist() == [[0, 0], [0, 0]]
    assert patch.select.tolist() == patch.value.tolist() == [0.25, 7.0]
    # two equal hot windows: (4, 8) comes before (8, 0) row by row (column by column it would not)
    two = torch.zeros(1, 16, 16)
    two[0, 4:8, 8:12] = 1.0
    two[0, 8:12, 0:4] = 1.0
    assert max_patch(two, window=4, stride=4).corner.tolist() == [[4, 8]]


def test_value_map_must_match_the_select_map() -> None:
    with pytest.raises(ValueError, match=r"value_map is \(1, 12, 10\) after averaging channels, select_map"):
        max_patch(torch.zeros(1, 12, 12), torch.zeros(1, 1, 12, 10), window=4)


@pytest.mark.parametrize("device", DEVICES)
def test_max_patch_under_no_grad_on_the_device_in_float32(device: str) -> None:
    flow, intensity = hot_maps()
    with torch.no_grad():
        patch = max_patch(flow.double().to(device), intensity.double().to(device), window=4, stride=2)
    assert {t.device.type for t in patch} == {device}
    assert (patch.select.dtype, patch.value.dtype, patch.corner.dtype) == (torch.float32, torch.float32, torch.int64)
    assert (patch.corner.tolist(), patch.select.tolist(), patch.value.tolist()) == ([[4, 2]], [3.0], [0.25])


# ---------------------------------------------------------------------------------------------- patch score
def test_zero_error_gives_a_finite_score() -> None:
    eps, lam = 1e-8, 0.2
    score = patch_score(np.array([0.0, 0.0]), np.array([0.0, 1.0]))
    assert isinstance(score, np.ndarray)
    assert score[0] == math.log(eps) + lam * math.log(eps) == pytest.approx((1 + lam) * math.log(eps), rel=1e-15)
    assert score[1] == math.log(eps)  # log(1) = 0
    tensor = patch_score(torch.zeros(3), torch.zeros(3))
    assert isinstance(tensor, torch.Tensor)
    assert tensor.dtype == torch.float32
    torch.testing.assert_close(tensor, torch.full((3,), (1 + lam) * math.log(eps)))
    half = patch_score(torch.zeros(2, dtype=torch.float16), torch.zeros(2, dtype=torch.float16))
    assert half.dtype == torch.float32  # eps underflows float16: computed in float32
    torch.testing.assert_close(half, torch.full((2,), (1 + lam) * math.log(eps)))


def test_patch_score_combines_the_logs_with_the_weights() -> None:
    # log(e^2) + 0.2 log(e^5) = 3; weights w add log w_F + lam log w_I
    assert patch_score(math.exp(2), math.exp(5)) == pytest.approx(3.0, rel=1e-15)
    assert patch_score(1.0, 1.0, w_flow=7.0, w_intensity=7.0) == pytest.approx(1.2 * math.log(7), rel=1e-15)
    assert patch_score(math.exp(1), 1.0, lam=0.5, w_intensity=math.exp(2)) == pytest.approx(2.0, rel=1e-15)
    assert np.isnan(patch_score(np.nan, 1.0))  # an unscorable frame stays unscorable
    with pytest.raises(ValueError, match="w_flow must be > 0"):
        patch_score(1.0, 1.0, w_flow=0.0)


# ---------------------------------------------------------------------------------------------- division by the max
def test_divide_by_max() -> None:
    np.testing.assert_array_equal(divide_by_max([2.0, 4.0, 1.0]), [0.5, 1.0, 0.25])
    np.testing.assert_array_equal(divide_by_max([-4.0, -2.0, -1.0]), [4.0, 2.0, 1.0])  # the order is reversed
    np.testing.assert_array_equal(divide_by_max([3.0, 3.0]), [1.0, 1.0])


@pytest.mark.parametrize("values", [[0.0, 0.0], [-1.0, 0.0], [1.0, np.nan], [1.0, np.inf], [-np.inf, 1.0], []])
def test_divide_by_max_guard_returns_zeros(values: list[float]) -> None:
    np.testing.assert_array_equal(divide_by_max(values), np.zeros(len(values)))


def test_fuse_by_the_max_uses_one_minus_g_for_a_negative_weight() -> None:
    a, b = np.array([1.0, 2.0, 4.0]), np.array([2.0, 0.0, 1.0])
    # a -> 1 - [0.25, 0.5, 1] = [0.75, 0.5, 0]; b -> [1, 0, 0.5]; mean of the two
    score = fuse({"a": a, "b": b}, {"a": -1.0, "b": 1.0}, normalisation="max")
    np.testing.assert_array_equal(score, [0.875, 0.25, 0.25])
    zeros, sevens = np.zeros(3), np.full(3, 7.0)
    np.testing.assert_array_equal(fuse({"a": zeros}, {"a": -1.0}, normalisation="max"), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(fuse({"a": sevens}, {"a": -1.0}, normalisation="max"), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(fuse({"a": sevens}, {"a": 1.0}, normalisation="max"), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(fuse({"a": sevens}, {"a": 1.0}), [0.0, 0.0, 0.0])  # min-max: no spread, 0


def two_videos(first: list[float], second: list[float], labels: list[int]) -> list[VideoSignals]:
    return [
        VideoSignals("a", np.arange(len(first)), labels, {"s": np.array(first)}),
        VideoSignals("b", np.arange(len(second)), labels, {"s": np.array(second)}),
    ]


def test_dividing_negative_scores_by_the_max_reverses_the_order() -> None:
    # Log scores rising in time, anomalous frames 1 and 3; video b is video a scaled by 2. Per-video min-max maps
    # both to [0, 1/3, 2/3, 1]: positives {1/3, 1} beat 3 of the 4 negatives pairs in {0, 2/3} -> AUC 0.75.
    # Dividing by the max (-1 and -2) maps both to [4, 3, 2, 1]: the order is reversed -> AUC 1 - 0.75 = 0.25.
    videos = two_videos([-4.0, -3.0, -2.0, -1.0], [-8.0, -6.0, -4.0, -2.0], [0, 1, 0, 1])
    minmax = evaluate(videos, {"s": 1.0})
    by_max = evaluate(videos, {"s": 1.0}, normalisation="max")
    np.testing.assert_array_equal(by_max.videos[0].score, [4.0, 3.0, 2.0, 1.0])
    assert (minmax.auc_micro, minmax.auc_macro) == (0.75, 0.75)
    assert (by_max.auc_micro, by_max.auc_macro) == (0.25, 0.25)
    assert by_max.auc_micro == 1 - minmax.auc_micro
    assert by_max.per_video == {"a": 0.25, "b": 0.25}
    assert by_max.auc_micro_raw == minmax.auc_micro_raw  # the raw fusion does not depend on the normalisation
    # Shifted to positive values the division keeps the order: a -> [6, 7, 8, 9] / 9, b -> [2, 4, 6, 8] / 8, both
    # videos still 0.75 and the concatenation too (12 of the 16 positive-negative pairs right).
    positive = two_videos([6.0, 7.0, 8.0, 9.0], [2.0, 4.0, 6.0, 8.0], [0, 1, 0, 1])
    assert evaluate(positive, {"s": 1.0}, normalisation="max").auc_micro == 0.75


def amc_videos(w: float) -> list[VideoSignals]:
    """Two videos scored by patch_score with both weights ``w``; the scores rise in time, frames 2 and 3 anomalous.

    log S_F + 0.2 log S_I: a ~ [-1.79, -1.53, -0.80, -0.65], b ~ [-1.34, -1.29, -0.94, -0.62], all negative; w = 7
    adds 1.2 log 7 ~ 2.34 and makes them all positive.
    """
    flow = {"a": [0.2, 0.25, 0.5, 0.6], "b": [0.3, 0.35, 0.45, 0.55]}
    intensity = {"a": [0.4, 0.5, 0.6, 0.5], "b": [0.5, 0.3, 0.5, 0.9]}
    return [
        VideoSignals(
            name,
            np.arange(4),
            [0, 0, 1, 1],
            {"s": patch_score(np.array(flow[name]), np.array(intensity[name]), w_flow=w, w_intensity=w)},
        )
        for name in ("a", "b")
    ]


def test_score_weights_cancel_under_minmax_not_under_the_max() -> None:
    one, seven = amc_videos(1.0), amc_videos(7.0)
    assert all((v.signals["s"] < 0).all() for v in one)
    assert all((v.signals["s"] > 0).all() for v in seven)
    minmax_one, minmax_seven = evaluate(one, {"s": 1.0}), evaluate(seven, {"s": 1.0})
    # min-max: identical scores (up to rounding) and AUCs; the anomalies score highest in each video
    np.testing.assert_allclose(minmax_one.videos[0].score, minmax_seven.videos[0].score, rtol=0, atol=1e-12)
    assert (minmax_one.auc_micro, minmax_one.auc_macro) == (minmax_seven.auc_micro, minmax_seven.auc_macro) == (1, 1)
    # division by the max: w = 1 keeps the scores negative and reverses them, w = 7 makes them positive and keeps
    # them (a: [0.32, 0.48, 0.91, 1], b: [0.58, 0.61, 0.82, 1]: every anomaly above every normal frame)
    max_one = evaluate(one, {"s": 1.0}, normalisation="max")
    max_seven = evaluate(seven, {"s": 1.0}, normalisation="max")
    assert (max_one.auc_micro, max_one.auc_macro) == (0.0, 0.0)
    assert (max_seven.auc_micro, max_seven.auc_macro) == (1.0, 1.0)


def test_unknown_normalisation_raises() -> None:
    videos = two_videos([1.0, 2.0], [1.0, 3.0], [0, 1])
    with pytest.raises(ConfigError, match=r"normalisation='bogus' is not one of \['minmax', 'max'\]"):
        evaluate(videos, {"s": 1.0}, normalisation="bogus")
    with pytest.raises(ConfigError, match="normalisation='MAX'"):
        fuse({"s": np.array([1.0, 2.0])}, {"s": 1.0}, normalisation="MAX")


def test_the_normalisation_is_recorded_and_printed() -> None:
    videos = two_videos([1.0, 2.0], [1.0, 3.0], [0, 1])
    minmax = evaluate(videos, {"s": 1.0})
    by_max = evaluate(videos, {"s": 1.0}, normalisation="max")
    raw = evaluate(videos, {"s": 1.0}, normalise=False, normalisation="max")
    assert (minmax.normalisation, by_max.normalisation) == ("minmax", "max")
    assert minmax.to_dict()["normalisation"] == "per-video min-max"
    assert by_max.to_dict()["normalisation"] == "per-video division by the max"
    assert raw.to_dict()["normalisation"] == "none (raw signals)"
    assert "s +1 (per-video min-max)" in format_summary(minmax, "t")
    assert "s +1 (per-video division by the max)" in format_summary(by_max, "t")
    assert "s +1 (raw, no normalisation)" in format_summary(raw, "t")


# ---------------------------------------------------------------------------------------------- FFP patch_max
def tiny_ffp(**kwargs: object) -> FFP:
    return FFP(channels=1, clip_len=3, generator={"features": 4}, loss={"intensity": 1.0}, **kwargs)


def test_ffp_patch_max_is_the_max_patch_of_the_prediction_error() -> None:
    torch.manual_seed(0)
    model = tiny_ffp(patch={"window": 8, "stride": 4}).eval()
    frames = torch.rand(2, 3, 1, 32, 32) * 2 - 1
    calls = []
    model.generator.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        signals = model.frame_signals({"frames": frames})
        assert len(calls) == 1  # one forward pass for both signals
        prediction = model.predict({"frames": frames})
    assert list(signals) == ["psnr", "patch_max", "intensity_error", "gradient_error"]
    target = frames[:, -1]
    error = ((prediction - target) / 2).square()[:, 0]  # one channel; the PSNR's squared error on [0, 1] images
    torch.testing.assert_close(signals["psnr"], losses.psnr(prediction, target), rtol=0, atol=0)
    torch.testing.assert_close(signals["patch_max"], max_patch(error, window=8, stride=4).select, rtol=0, atol=0)
    # independently: the largest mean over the 7 x 7 windows of 8 x 8 pixels at corners 0, 4, ..., 24
    corners = [(y, x) for y in range(0, 25, 4) for x in range(0, 25, 4)]
    brute = [max(error[n, y : y + 8, x : x + 8].mean().item() for y, x in corners) for n in range(2)]
    np.testing.assert_allclose(signals["patch_max"].numpy(), brute, rtol=1e-6)
    assert (signals["patch_max"] > error.flatten(1).mean(1)).all()  # the worst window is worse than the frame mean
    # the per-frame loss terms of the same prediction (the FFP README's fused score is a model.score over them)
    torch.testing.assert_close(signals["intensity_error"], (prediction - target).square().flatten(1).mean(1))
    torch.testing.assert_close(signals["gradient_error"], losses.gradient_loss(prediction, target, reduction="none"))


def test_ffp_scores_with_patch_max() -> None:
    assert FFP.signals == ("psnr", "patch_max", "intensity_error", "gradient_error")
    with_flow = tiny_ffp(frozen={"flow": LucasKanade()})
    assert with_flow.signals == (*FFP.signals, "flow_error")  # the flow term's error, when there is an estimator
    batch = {"frames": torch.rand(2, 3, 1, 32, 32) * 2 - 1}
    with torch.no_grad():
        flow_error = with_flow.eval().frame_signals(batch)["flow_error"]
        clip = with_flow.split_clip(batch["frames"])
        prediction = with_flow.predict(batch)
        expected = (LucasKanade()(clip.last, prediction) - LucasKanade()(clip.last, clip.target)).abs()
    torch.testing.assert_close(flow_error, expected.flatten(1).mean(1))
    assert tiny_ffp().score_weights == {"psnr": -1.0}
    assert tiny_ffp().patch == {"window": 16, "stride": 4}
    model = tiny_ffp(score={"patch_max": 1}, patch={"stride": 2})
    assert model.score_weights == {"patch_max": 1.0}
    assert model.patch == {"window": 16, "stride": 2}
    assert model.hparams["patch"] == {"stride": 2}
    # the test protocol fuses the emitted signals with these weights
    videos = [VideoSignals("a", [0, 1, 2], [0, 1, 0], {"psnr": [30.0, 20.0, 25.0], "patch_max": [0.1, 0.3, 0.2]})]
    result = evaluate(videos, model.score_weights)
    assert result.weights == {"patch_max": 1.0}
    np.testing.assert_allclose(result.videos[0].score, [0.0, 1.0, 0.5])


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"size": 8}, r"model.patch has unknown key\(s\) \['size'\]; valid: \['window', 'stride'\]"),
        ({"window": 0}, r"model.patch.window must be a positive integer \(pixels\), got 0"),
        ({"stride": 2.5}, r"model.patch.stride must be a positive integer \(pixels\), got 2.5"),
        ({"stride": True}, r"model.patch.stride must be a positive integer"),
    ],
)
def test_ffp_patch_config_errors(patch: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_ffp(patch=patch)


def test_ffp_window_larger_than_the_frame_raises() -> None:
    model = tiny_ffp(patch={"window": 64}).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="a 64x64 window does not fit in an error map of 32x32"):
        model.frame_signals({"frames": torch.zeros(1, 3, 1, 32, 32)})
