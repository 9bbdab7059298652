"""Flow estimators: the interface contract, accuracy on known translations, gradients, configs, FlowNet2-SD loading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from vad import config_dir
from vad.errors import ConfigError
from vad.flow import DISFlow, FlowEstimator, FlowNet2SD, LucasKanade, build_flow, flow_names, warp
from vad.flow.base import resize_flow, to_grey

# The FlowNet2-SD layout of methods.md, written out independently of the module: name -> weight shape (bias = out).
FLOWNET2SD_WEIGHTS = {
    "conv0.0": (64, 6, 3, 3),
    "conv1.0": (64, 64, 3, 3),
    "conv1_1.0": (128, 64, 3, 3),
    "conv2.0": (128, 128, 3, 3),
    "conv2_1.0": (128, 128, 3, 3),
    "conv3.0": (256, 128, 3, 3),
    "conv3_1.0": (256, 256, 3, 3),
    "conv4.0": (512, 256, 3, 3),
    "conv4_1.0": (512, 512, 3, 3),
    "conv5.0": (512, 512, 3, 3),
    "conv5_1.0": (512, 512, 3, 3),
    "conv6.0": (1024, 512, 3, 3),
    "conv6_1.0": (1024, 1024, 3, 3),
    # ConvTranspose2d weights are (in, out, k, k).
    "deconv5.0": (1024, 512, 4, 4),
    "deconv4.0": (1026, 256, 4, 4),
    "deconv3.0": (770, 128, 4, 4),
    "deconv2.0": (386, 64, 4, 4),
    "inter_conv5.0": (512, 1026, 3, 3),
    "inter_conv4.0": (256, 770, 3, 3),
    "inter_conv3.0": (128, 386, 3, 3),
    "inter_conv2.0": (64, 194, 3, 3),
    "predict_flow6": (2, 1024, 3, 3),
    "predict_flow5": (2, 512, 3, 3),
    "predict_flow4": (2, 256, 3, 3),
    "predict_flow3": (2, 128, 3, 3),
    "predict_flow2": (2, 64, 3, 3),
    "upsampled_flow6_to_5": (2, 2, 4, 4),
    "upsampled_flow5_to_4": (2, 2, 4, 4),
    "upsampled_flow4_to_3": (2, 2, 4, 4),
    "upsampled_flow3_to_2": (2, 2, 4, 4),
}
TRANSPOSED = ("deconv", "upsampled_flow")


def translated_texture(size: int, dx: float, dy: float, seed: int = 0, sigma: float = 1.0) -> tuple:
    """A periodic random texture (1, 1, size, size) in [-0.8, 0.8] and its exact Fourier shift by (dx, dy).

    White noise low-passed by a Gaussian of ``sigma`` pixels; the second image satisfies b(x + (dx, dy)) = a(x), so
    the true flow from a to b is (dx, dy) everywhere away from the wrapped border. With sigma = 1 the texture is fine
    enough that a 4-pixel shift is out of reach of a single-scale Lucas-Kanade.
    """
    noise = torch.randn(size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    freq = torch.fft.fftfreq(size, dtype=torch.float64)
    fy, fx = torch.meshgrid(freq, freq, indexing="ij")
    spectrum = torch.fft.fft2(noise) * torch.exp(-2 * (math.pi * sigma) ** 2 * (fx**2 + fy**2))
    a = torch.fft.ifft2(spectrum).real
    b = torch.fft.ifft2(spectrum * torch.exp(-2j * math.pi * (fx * dx + fy * dy))).real
    offset, scale = a.mean(), a.abs().max() / 0.8
    return ((a - offset) / scale).float()[None, None], ((b - offset) / scale).float()[None, None]


def interior_error(flow: torch.Tensor, dx: float, dy: float, margin: int = 8) -> float:
    """Mean end-point error of (1, 2, H, W) against the constant (dx, dy), ``margin`` pixels from each edge ignored."""
    error = ((flow[0, 0] - dx) ** 2 + (flow[0, 1] - dy) ** 2).sqrt()
    return error[margin:-margin, margin:-margin].mean().item()


# --------------------------------------------------------------------------------------------------- shared contract


def test_flow_names_are_the_config_files():
    assert flow_names() == ["dis", "flownet2sd", "learned", "lk", "none"]


def test_build_flow_by_name():
    assert isinstance(build_flow("lk"), LucasKanade)
    assert isinstance(build_flow("dis"), DISFlow)
    assert build_flow("none") is None
    assert build_flow("lk", levels=2).levels == 2


def test_build_flow_rejects_unknown_names_and_values():
    choices = "dis, flownet2sd, learned, lk, none"
    with pytest.raises(ConfigError, match=f"flow=lkk: unknown flow estimator; choose one of {choices}"):
        build_flow("lkk")
    with pytest.raises(ConfigError, match=r"flow\.preset=slow: unknown DIS preset"):
        build_flow("dis", preset="slow")
    with pytest.raises(ConfigError, match="must be at least 1"):
        build_flow("lk", levels=0)
    with pytest.raises(ConfigError, match="has no _target_"):
        build_flow({"levels": 3})


def test_composed_hydra_configs_instantiate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VAD_WEIGHTS_DIR", str(tmp_path))
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = {name: compose(overrides=[f"+flow={name}", "+paths=default"]) for name in flow_names()}
    assert cfg["flownet2sd"].flow.checkpoint == f"{tmp_path}/FlowNet2-SD.pth"
    assert isinstance(instantiate(cfg["lk"].flow), LucasKanade)
    assert isinstance(instantiate(cfg["dis"].flow), DISFlow)
    assert instantiate(cfg["none"].flow) is None
    with pytest.raises(ConfigError, match="FlowNet2-SD checkpoint not found"):
        build_flow(cfg["flownet2sd"].flow)


@pytest.mark.parametrize("estimator", [LucasKanade(), DISFlow()], ids=["lk", "dis"])
def test_parent_train_does_not_switch_estimator_to_training(estimator: FlowEstimator):
    parent = nn.ModuleDict({"flow": estimator, "head": nn.Conv2d(1, 1, 1)})
    parent.train()
    assert parent["head"].training
    assert not any(module.training for module in estimator.modules())


def test_warp_by_integer_flow_shifts_exactly():
    image = torch.arange(5 * 6, dtype=torch.float32).view(1, 1, 5, 6)
    flow = torch.zeros(1, 2, 5, 6)
    flow[:, 0] = 2.0
    flow[:, 1] = -1.0
    warped = warp(image, flow)
    # warped(y, x) = image(y - 1, x + 2), edge pixels repeated outside the frame.
    assert torch.equal(warped[0, 0, 1:, :4], image[0, 0, :-1, 2:])
    assert torch.equal(warped[0, 0, 0, :4], image[0, 0, 0, 2:])


def test_to_grey_uses_bt601_luma():
    rgb = torch.tensor([1.0, -1.0, 0.5]).view(1, 3, 1, 1)
    assert to_grey(rgb).item() == pytest.approx(0.299 - 0.587 + 0.057)
    grey = torch.rand(2, 1, 3, 3)
    assert to_grey(grey) is grey


@pytest.mark.parametrize("estimator", [LucasKanade(), DISFlow()], ids=["lk", "dis"])
def test_rejects_mismatched_inputs(estimator: FlowEstimator):
    with pytest.raises(ValueError, match="same shape"):
        estimator(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
    with pytest.raises(ValueError, match=r"\(N, 1 or 3, H, W\)"):
        estimator(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8))


# ---------------------------------------------------------------------------------------------------- Lucas-Kanade


@pytest.mark.parametrize(("dx", "dy"), [(1.3, -0.7), (-1.3, 0.7), (3.4, 2.6)])
def test_lk_recovers_translation(dx: float, dy: float):
    a, b = translated_texture(64, dx, dy)
    flow = LucasKanade()(a, b)
    assert flow.shape == (1, 2, 64, 64)
    assert interior_error(flow, dx, dy) < 0.3


def test_lk_large_translation_needs_the_pyramid():
    a, b = translated_texture(64, 3.4, 2.6)
    assert interior_error(LucasKanade(levels=1)(a, b), 3.4, 2.6) > 1.0
    assert interior_error(LucasKanade(levels=3)(a, b), 3.4, 2.6) < 0.3


def test_lk_identical_frames_give_zero_flow():
    a, _ = translated_texture(32, 0.0, 0.0)
    # Not bit-exact zero: grid_sample at the pixel centres rounds the normalised coordinates.
    assert LucasKanade()(a, a).abs().max() < 1e-5


def test_lk_rgb_is_luminance():
    a, b = translated_texture(48, 1.3, -0.7)
    colour = torch.tensor([0.5, 1.2, 0.9]).view(1, 3, 1, 1)
    rgb_a, rgb_b = a * colour, b * colour
    estimator = LucasKanade()
    torch.testing.assert_close(estimator(rgb_a, rgb_b), estimator(to_grey(rgb_a), to_grey(rgb_b)))


def test_lk_batches_and_odd_sizes():
    pairs = [translated_texture(64, 1.3, -0.7, seed=seed) for seed in range(2)]
    a = torch.cat([pair[0] for pair in pairs])[:, :, :45, :61]
    b = torch.cat([pair[1] for pair in pairs])[:, :, :45, :61]
    estimator = LucasKanade()
    flow = estimator(a, b)
    assert flow.shape == (2, 2, 45, 61)
    torch.testing.assert_close(flow[1:], estimator(a[1:], b[1:]))


def test_lk_runs_in_float32_under_autocast():
    a, b = translated_texture(64, 1.3, -0.7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        flow = LucasKanade()(a, b)
    assert flow.dtype == torch.float32
    assert interior_error(flow, 1.3, -0.7) < 0.3


def test_lk_gradient_reaches_both_frames():
    a, b = translated_texture(32, 1.0, 0.5)
    a.requires_grad_(True)
    b.requires_grad_(True)
    estimator = LucasKanade()
    assert estimator.differentiable
    assert list(estimator.parameters()) == []
    assert estimator.state_dict() == {}
    estimator(a, b).abs().mean().backward()
    for image in (a, b):
        assert image.grad is not None
        assert torch.isfinite(image.grad).all()
        assert image.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------------------- DIS


@pytest.mark.parametrize(("dx", "dy"), [(1.3, -0.7), (-1.3, 0.7), (3.4, 2.6)])
def test_dis_recovers_translation(dx: float, dy: float):
    a, b = translated_texture(64, dx, dy)
    flow = DISFlow()(a, b)
    assert flow.shape == (1, 2, 64, 64)
    assert flow.dtype == torch.float32
    assert interior_error(flow, dx, dy) < 0.3


def test_dis_is_not_differentiable_and_takes_rgb():
    a, b = translated_texture(64, 1.3, -0.7)
    a.requires_grad_(True)
    estimator = DISFlow(preset="fast")
    assert not estimator.differentiable
    flow = estimator(a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1))
    assert not flow.requires_grad
    torch.testing.assert_close(flow, estimator(a, b))


# ------------------------------------------------------------------------------------------------------ FlowNet2-SD


@pytest.fixture(scope="module")
def flownet() -> FlowNet2SD:
    """A randomly initialised FlowNet2-SD (the layout is real; the flow means nothing)."""
    torch.manual_seed(0)
    return FlowNet2SD()


@pytest.fixture(scope="module")
def flownet_checkpoint(flownet: FlowNet2SD, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random model saved as the published file is laid out: a dict whose 'state_dict' holds the weights."""
    path = tmp_path_factory.mktemp("weights") / "FlowNet2-SD.pth"
    torch.save({"epoch": 1, "best_EPE": 1.5, "state_dict": flownet.state_dict()}, path)
    return path


def test_flownet2sd_matches_the_checkpoint_layout(flownet: FlowNet2SD):
    state = flownet.state_dict()
    expected = {}
    for name, shape in FLOWNET2SD_WEIGHTS.items():
        expected[f"{name}.weight"] = shape
        expected[f"{name}.bias"] = (shape[1] if name.startswith(TRANSPOSED) else shape[0],)
    assert {key: tuple(value.shape) for key, value in state.items()} == expected
    assert len(state) == 60
    assert sum(value.numel() for value in state.values()) == 45_371_666


def test_flownet2sd_is_frozen_in_eval_mode(flownet: FlowNet2SD):
    assert flownet.differentiable
    assert not any(parameter.requires_grad for parameter in flownet.parameters())
    nn.Sequential(flownet).train()
    assert not any(module.training for module in flownet.modules())


def test_flownet2sd_checkpoint_round_trips(flownet: FlowNet2SD, flownet_checkpoint: Path, tmp_path: Path):
    loaded = build_flow("flownet2sd", checkpoint=str(flownet_checkpoint))
    for key, value in flownet.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    raw = tmp_path / "raw.pth"
    torch.save(flownet.state_dict(), raw)
    assert torch.equal(FlowNet2SD(raw).conv6_1[0].weight, flownet.conv6_1[0].weight)


def test_flownet2sd_rejects_a_wrong_checkpoint(tmp_path: Path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"state_dict": {"conv0.0.weight": torch.zeros(64, 3, 3, 3), "extra": torch.zeros(1)}}, wrong)
    with pytest.raises(ConfigError) as error:
        FlowNet2SD(wrong)
    message = str(error.value)
    assert message.startswith(f"{wrong}: not a FlowNet2-SD checkpoint")
    assert "59 missing keys" in message
    assert "1 unexpected keys, e.g. extra" in message
    assert "conv0.0.weight (64, 3, 3, 3) != (64, 6, 3, 3)" in message
    assert "\n" not in message


def test_flownet2sd_missing_or_unreadable_checkpoint(tmp_path: Path):
    missing = tmp_path / "FlowNet2-SD.pth"
    with pytest.raises(ConfigError) as error:
        FlowNet2SD(missing)
    message = str(error.value)
    assert message.startswith(f"{missing}: FlowNet2-SD checkpoint not found")
    assert "NVIDIA's flownet2-pytorch" in message
    assert "flow.checkpoint=" in message
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read this file as a torch checkpoint"):
        FlowNet2SD(garbage)


def test_flownet2sd_output_scale_channels_and_crop():
    # With flow2 forced to the constant (1, -2), the output must be 20 * (1, -2) everywhere at the input size.
    net = FlowNet2SD()
    state = net.state_dict()
    state["predict_flow2.weight"] = torch.zeros_like(state["predict_flow2.weight"])
    state["predict_flow2.bias"] = torch.tensor([1.0, -2.0])
    net.load_state_dict(state)
    flow = net(torch.rand(1, 3, 70, 90) * 2 - 1, torch.rand(1, 3, 70, 90) * 2 - 1)
    assert flow.shape == (1, 2, 70, 90)
    assert torch.equal(flow[0, 0], torch.full((70, 90), 20.0))
    assert torch.equal(flow[0, 1], torch.full((70, 90), -40.0))


def test_flownet2sd_grey_brightness_and_gradients(flownet: FlowNet2SD):
    torch.manual_seed(1)
    a = (torch.rand(1, 1, 70, 90) * 1.6 - 0.8).requires_grad_(True)
    b = (torch.rand(1, 1, 70, 90) * 1.6 - 0.8).requires_grad_(True)
    before = {key: value.clone() for key, value in flownet.state_dict().items()}
    flow = flownet(a, b)
    assert flow.shape == (1, 2, 70, 90)
    flow.abs().mean().backward()
    for image in (a, b):
        assert image.grad is not None
        assert image.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in flownet.parameters())
    assert all(torch.equal(value, before[key]) for key, value in flownet.state_dict().items())
    with torch.no_grad():
        # Grey is replicated to RGB, and the per-channel mean over both frames removes a common brightness offset.
        torch.testing.assert_close(flownet(a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)), flow.detach())
        torch.testing.assert_close(flownet(a + 0.1, b + 0.1), flow.detach(), atol=1e-3, rtol=1e-3)


# ------------------------------------------------------------------------------------------- estimating at input_size


def test_resize_flow_rescales_each_axis_by_its_own_ratio():
    flow = torch.stack((torch.full((40, 80), 3.0), torch.full((40, 80), -2.0)))[None]
    small = resize_flow(flow, (20, 20))  # x: 80 -> 20 columns (/4), y: 40 -> 20 rows (/2)
    assert small.shape == (1, 2, 20, 20)
    assert torch.allclose(small[0, 0], torch.full((20, 20), 0.75))
    assert torch.allclose(small[0, 1], torch.full((20, 20), -1.0))
    big = resize_flow(flow, (80, 240))
    assert torch.allclose(big[0, 0], torch.full((80, 240), 9.0))
    assert torch.allclose(big[0, 1], torch.full((80, 240), -4.0))
    assert resize_flow(flow, (40, 80)) is flow
    # shrinking averages: a 2x2 block of (1, 3) becomes one pixel of (mean * 1/2)
    block = torch.tensor([[1.0, 3.0], [1.0, 3.0]]).expand(1, 2, 2, 2)
    assert torch.allclose(resize_flow(block, (1, 1)), torch.tensor([1.0, 1.0]).view(1, 2, 1, 1))


class _Probe(FlowEstimator):
    """Returns the constant flow (3, -2) px at whatever size it is called with, and records that size."""

    def __init__(self, input_size=None) -> None:
        super().__init__(input_size)
        self.seen: list[tuple[int, int]] = []
        self.freeze()

    def compute(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(a.shape[-2:]))
        return torch.stack((torch.full_like(a[:, 0], 3.0), torch.full_like(a[:, 0], -2.0)), dim=1) + 0 * (a + b)


def test_input_size_resizes_the_frames_and_scales_the_flow_back():
    probe = _Probe(input_size=(40, 80))
    a = torch.rand(2, 1, 20, 20, requires_grad=True)
    flow = probe(a, torch.rand(2, 1, 20, 20))
    assert probe.seen == [(40, 80)]
    assert flow.shape == (2, 2, 20, 20)
    assert torch.allclose(flow[:, 0], torch.full((2, 20, 20), 0.75))  # 3 px of 80 columns at 20 columns
    assert torch.allclose(flow[:, 1], torch.full((2, 20, 20), -1.0))  # -2 px of 40 rows at 20 rows
    flow.sum().backward()  # the resizing is differentiable
    assert a.grad is not None
    probe.seen.clear()
    probe(torch.rand(1, 1, 40, 80), torch.rand(1, 1, 40, 80))  # already at the input size: called as it is
    assert probe.seen == [(40, 80)]
    assert "input_size" in probe.identity()
    assert "(40, 80)" in probe.identity()
    assert "(40, 80)" not in _Probe().identity()


def test_input_size_is_checked_and_configured():
    assert DISFlow(input_size=[48, 64]).input_size == (48, 64)
    assert LucasKanade().input_size is None
    for bad in ([0, 64], [64], "big", [64, -1]):
        with pytest.raises(ConfigError, match=r"flow\.input_size="):
            DISFlow(input_size=bad)
    # FlowNet2-SD as the official FFP code feeds it
    assert build_flow("flownet2sd", checkpoint=None).input_size == (384, 512)
    assert build_flow("dis").input_size is None


def test_dis_at_twice_the_size_recovers_the_translation_in_working_pixels():
    # A 1.2-px shift at 128x128 seen at 64x64: DIS estimates 2.4 px at 128 and hands back 1.2 px at 64.
    a, b = translated_texture(128, 1.2, -0.6, sigma=2.0)
    small = nn.functional.interpolate(torch.cat((a, b)), size=(64, 64), mode="area")
    flow = DISFlow(input_size=(128, 128))(small[:1], small[1:])
    assert flow.shape == (1, 2, 64, 64)
    assert interior_error(flow, 0.6, -0.3) < 0.15
