"""The FFP generator (UNet) and discriminator (PatchDiscriminator): sizes, parameter counts, variants, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vad.nets import PatchDiscriminator, UNet, init_weights


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def unet_params(c: int, o: int, features: int = 64, depth: int = 4, batch: bool = False) -> int:
    """The count from the UNet docstring's formula, derived independently of the module."""
    b = 0 if batch else 1
    w = [features * 2**i for i in range(depth)]
    total, previous, double_conv_widths = 0, c, []
    for wi in w:
        total += 9 * (previous * wi + wi * wi) + 2 * b * wi
        previous = wi
        double_conv_widths.append(wi)
    for i in range(depth - 1):
        total += 4 * w[i + 1] * w[i] + w[i] + 9 * (2 * w[i] * w[i] + w[i] * w[i]) + 2 * b * w[i]
        double_conv_widths.append(w[i])
    if batch:
        total += 4 * sum(double_conv_widths)
    return total + 9 * w[0] * o + o


def test_unet_parameter_count_official() -> None:
    net = UNet(12, 3)
    assert n_params(net) == 7_704_195 == unet_params(12, 3)
    assert abs(n_params(net) - 7.7e6) / 7.7e6 < 0.01


def test_unet_parameter_count_port_variant() -> None:
    net = UNet(12, 3, norm="batch", relu_after_upconv=False, init="normal")
    assert n_params(net) == 7_707_011 == unet_params(12, 3, batch=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 2 * (4 + 3)


@pytest.mark.parametrize(("features", "depth", "c", "o"), [(8, 3, 4, 1), (16, 2, 12, 3), (4, 1, 3, 3)])
def test_unet_parameter_count_other_sizes(features: int, depth: int, c: int, o: int) -> None:
    assert n_params(UNet(c, o, features=features, depth=depth)) == unet_params(c, o, features, depth)
    assert n_params(UNet(c, o, features, depth, norm="batch")) == unet_params(c, o, features, depth, batch=True)


def test_unet_widths_and_relu_after_upconv() -> None:
    net = UNet(12, 3)
    assert [block[0].out_channels for block in net.encoder] == [64, 128, 256, 512]
    assert [up[0].out_channels for up in net.upsample] == [256, 128, 64]
    assert [block[0].in_channels for block in net.decoder] == [512, 256, 128]
    assert all(isinstance(up[-1], nn.ReLU) for up in net.upsample)
    port = UNet(12, 3, relu_after_upconv=False)
    assert all(len(up) == 1 for up in port.upsample)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_unet_output_shape_and_gradients(norm: str) -> None:
    torch.manual_seed(0)
    net = UNet(12, 3, features=8, norm=norm)
    x = torch.rand(2, 12, 32, 48) * 2 - 1
    y = net(x)
    assert y.shape == (2, 3, 32, 48)
    y.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_unet_output_goes_through_tanh() -> None:
    net = UNet(3, 2, features=4, depth=2)
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([5.0, -5.0]))
    y = net(torch.zeros(1, 3, 8, 8))
    torch.testing.assert_close(y[:, 0], torch.full((1, 8, 8), math.tanh(5.0)))
    torch.testing.assert_close(y[:, 1], torch.full((1, 8, 8), -math.tanh(5.0)))


def test_unet_concatenates_skip_then_upsampled() -> None:
    torch.manual_seed(0)
    net = UNet(2, 1, features=4, depth=3)
    seen: dict[str, torch.Tensor] = {}
    net.encoder[0].register_forward_hook(lambda _m, _i, out: seen.__setitem__("skip", out.detach().clone()))
    net.upsample[-1].register_forward_hook(lambda _m, _i, out: seen.__setitem__("up", out.detach().clone()))
    net.decoder[-1].register_forward_pre_hook(lambda _m, args: seen.__setitem__("cat", args[0].detach().clone()))
    net(torch.rand(1, 2, 16, 16))
    assert seen["cat"].shape == (1, 8, 16, 16)
    torch.testing.assert_close(seen["cat"], torch.cat([seen["skip"], seen["up"]], dim=1))


def test_unet_rejects_size_not_divisible() -> None:
    net = UNet(12, 3, features=4, depth=4)
    with pytest.raises(ValueError, match=r"30x32 is not divisible by 8"):
        net(torch.zeros(1, 12, 30, 32))
    with pytest.raises(ValueError, match=r"expects \(N, 12, H, W\)"):
        net(torch.zeros(1, 3, 32, 32))
    assert UNet(3, 3, features=4, depth=3).size_multiple == 4


def test_unet_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="norm must be one of"):
        UNet(3, 3, norm="instance")
    with pytest.raises(ValueError, match="init must be one of"):
        UNet(3, 3, init="kaiming")
    with pytest.raises(ValueError, match="depth must be >= 1"):
        UNet(3, 3, depth=0)


def test_init_xavier_bounds_and_zero_biases() -> None:
    torch.manual_seed(0)
    net = UNet(12, 3, features=16)
    conv = net.encoder[1][2]  # 32 -> 32, 3x3
    bound = math.sqrt(6 / (32 * 9 + 32 * 9))
    assert conv.weight.abs().max() <= bound
    assert conv.weight.abs().max() > 0.95 * bound
    assert all(m.bias.abs().sum() == 0 for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d))


def test_init_normal_std_and_batchnorm_scales() -> None:
    torch.manual_seed(0)
    net = UNet(12, 3, features=32, norm="batch", init="normal")
    weights = net.encoder[3][0].weight  # 256 x 128 x 3 x 3
    assert weights.mean().abs() < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)
    scales = torch.cat([m.weight for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
    assert scales.mean().item() == pytest.approx(1.0, abs=0.005)
    assert scales.std().item() == pytest.approx(0.02, rel=0.2)


def test_init_weights_covers_linear() -> None:
    layer = nn.Linear(100, 100)
    torch.manual_seed(0)
    init_weights(layer, "normal")
    assert layer.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert layer.bias.abs().sum() == 0


def test_patch_discriminator_256_gives_35x35_map() -> None:
    torch.manual_seed(0)
    disc = PatchDiscriminator(3)
    probs = disc(torch.rand(1, 3, 256, 256) * 2 - 1)
    assert probs.shape == (1, 1, 35, 35)
    assert probs.min() >= 0
    assert probs.max() <= 1
    assert disc.output_size(256, 256) == (35, 35)


def test_patch_discriminator_64_and_rectangular_shapes() -> None:
    disc = PatchDiscriminator(1)
    assert disc(torch.zeros(2, 1, 64, 64)).shape == (2, 1, 11, 11)
    # 64 -> 33 -> 17 -> 9 -> 10 -> 11 and 128 -> 65 -> 33 -> 17 -> 18 -> 19
    assert disc(torch.zeros(1, 1, 64, 128)).shape == (1, 1, 11, 19)


def test_patch_discriminator_parameter_count_and_structure() -> None:
    disc = PatchDiscriminator(3)
    expected = sum(
        c_in * c_out * 16 + c_out for c_in, c_out in [(3, 128), (128, 256), (256, 512), (512, 512), (512, 1)]
    )
    assert n_params(disc) == expected == 6_831_489
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2), (2, 2), (2, 2), (1, 1), (1, 1)]
    assert all(c.kernel_size == (4, 4) and c.padding == (2, 2) for c in convs)
    assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in disc.modules()) == 4
    assert not any(isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d) for m in disc.modules())


def test_patch_discriminator_sigmoid_and_padding_modes() -> None:
    torch.manual_seed(0)
    reflect = PatchDiscriminator(1, features=(4, 8, 8, 8))
    logits = PatchDiscriminator(1, features=(4, 8, 8, 8), sigmoid=False)
    zeros = PatchDiscriminator(1, features=(4, 8, 8, 8), padding_mode="zeros")
    logits.load_state_dict(reflect.state_dict())
    zeros.load_state_dict(reflect.state_dict())
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    torch.testing.assert_close(torch.sigmoid(logits(x)), reflect(x))
    assert zeros(x).shape == reflect(x).shape
    assert not torch.allclose(zeros(x), reflect(x))


def test_patch_discriminator_output_size_matches_forward() -> None:
    for mode in ("reflect", "zeros"):
        disc = PatchDiscriminator(1, features=(2, 2, 2, 2), padding_mode=mode)
        for size in range(10, 40, 3):
            assert tuple(disc(torch.zeros(1, 1, size, size + 5)).shape[-2:]) == disc.output_size(size, size + 5)


def test_patch_discriminator_errors() -> None:
    disc = PatchDiscriminator(3, features=(2, 2, 2, 2))
    # With reflect padding 2 the 4th conv needs more than 2 pixels: 9 -> 5 -> 3 -> 2 fails.
    with pytest.raises(ValueError, match="9x9 is too small"):
        disc(torch.zeros(1, 3, 9, 9))
    assert disc.output_size(10, 10) == (5, 5)
    assert PatchDiscriminator(3, features=(2, 2, 2, 2), padding_mode="zeros").output_size(1, 1) == (3, 3)
    with pytest.raises(ValueError, match=r"expects \(N, 3, H, W\)"):
        disc(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        PatchDiscriminator(3, padding_mode="replicate")
