"""Losses and PSNR against hand-computed values on exact small tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from vad.methods.losses import (
    MSSSIM_BETAS,
    PSNR_MIN_MSE,
    flow_loss,
    gaussian_kl,
    gradient_loss,
    intensity_loss,
    l1_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    msssim_betas,
    msssim_loss,
    msssim_scales,
    psnr,
    psnr_from_mse,
)

# One 3x3 grey image, used by the gradient-loss cases below.
P = torch.tensor([[0.5, 1.0, 0.0], [0.0, 0.5, 0.5], [1.0, 0.0, -0.5]]).reshape(1, 1, 3, 3)


def test_intensity_loss_exact() -> None:
    pred = torch.tensor([[[[0.0, 0.5], [-1.0, 1.0]]]])
    target = torch.tensor([[[[1.0, 0.5], [-0.5, 0.0]]]])
    # squared errors 1, 0, 0.25, 1 -> mean 2.25 / 4
    assert intensity_loss(pred, target).item() == pytest.approx(0.5625)


def test_intensity_loss_averages_over_batch_and_channels() -> None:
    pred = torch.zeros(2, 3, 2, 2)
    target = torch.zeros(2, 3, 2, 2)
    target[1] = 1.0  # second sample all off by 1: mean = 12 / 24
    assert intensity_loss(pred, target).item() == pytest.approx(0.5)


def test_gradient_loss_against_zero_target_with_official_padding() -> None:
    # |dx P| with a zero column on the right (last column's dx = -P[:, -1]):
    #   row 0: |1-.5| |0-1| |0-0| = .5 1 0;  row 1: .5 0 .5;  row 2: 1 .5 .5      -> sum 4.5
    # |dy P| with a zero row at the bottom (last row's dy = -P[-1, :]):
    #   col 0: .5 1 1;  col 1: .5 .5 0;  col 2: .5 1 .5                          -> sum 5.5
    # L = (4.5 + 5.5) / 9
    assert gradient_loss(P, torch.zeros_like(P)).item() == pytest.approx(10 / 9)


def test_gradient_loss_without_padding() -> None:
    # interior |dx|: .5 1 / .5 0 / 1 .5 -> 3.5 over 6; interior |dy|: .5 .5 .5 / 1 .5 1 -> 4 over 6
    assert gradient_loss(P, torch.zeros_like(P), zero_pad=False).item() == pytest.approx(3.5 / 6 + 4 / 6)


def test_gradient_loss_compares_magnitudes_of_gradients() -> None:
    # -P has the same |dx|, |dy| everywhere (padding included): the loss is | |dP| - |dG| |, not |dP - dG|.
    assert gradient_loss(P, -P).item() == 0.0


def test_gradient_loss_padding_sees_a_constant_offset_only_at_the_border() -> None:
    # G = P + 1: interior differences are equal; at the padded border |dx| = |last column|, |dy| = |last row|.
    # last column |P| = 0 .5 .5 vs |G| = 1 1.5 .5 -> 1 1 0; last row |P| = 1 0 .5 vs |G| = 2 1 .5 -> 1 1 0.
    assert gradient_loss(P, P + 1).item() == pytest.approx(4 / 9)
    assert gradient_loss(P, P + 1, zero_pad=False).item() == 0.0


def test_gradient_loss_is_per_channel_and_batch_mean() -> None:
    pred = torch.cat([P, torch.zeros_like(P)], dim=1).repeat(2, 1, 1, 1)  # (2, 2, 3, 3)
    # half of the channels carry 10/9 of loss, the other half 0
    assert gradient_loss(pred, torch.zeros_like(pred)).item() == pytest.approx(5 / 9)


def test_flow_loss_is_l1_mean() -> None:
    pred = torch.tensor([[[[1.0, -2.0]], [[0.5, 0.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[[0.0, 1.0]], [[0.5, -1.0]]]])
    assert flow_loss(pred, target).item() == pytest.approx((1 + 3 + 0 + 1) / 4)


def test_lsgan_losses_exact() -> None:
    d_fake = torch.tensor([0.0, 0.5, 1.0, 0.25]).reshape(1, 1, 2, 2)
    d_real = torch.tensor([1.0, 0.5, 0.0, 0.8]).reshape(1, 1, 2, 2)
    # (1 + .25 + 0 + .5625) / 2 / 4
    assert lsgan_generator_loss(d_fake).item() == pytest.approx(1.8125 / 8)
    # real: (0 + .25 + 1 + .04) / 8; fake: (0 + .25 + 1 + .0625) / 8
    assert lsgan_discriminator_loss(d_real, d_fake).item() == pytest.approx((1.29 + 1.3125) / 8)
    assert lsgan_generator_loss(torch.ones(4, 1, 3, 3)).item() == 0.0
    assert lsgan_discriminator_loss(torch.ones(4, 1, 3, 3), torch.zeros(4, 1, 3, 3)).item() == 0.0


def test_psnr_exact_values_per_sample() -> None:
    target = torch.ones(3, 1, 2, 2)  # white
    pred = torch.stack([torch.zeros(1, 2, 2), -torch.ones(1, 2, 2), torch.ones(1, 2, 2)])
    # grey vs white: [0, 1] error 0.5 -> mse .25 -> 10 log10(4); black vs white: mse 1 -> 0 dB; equal -> 100 dB cap
    result = psnr(pred, target)
    assert result.shape == (3,)
    torch.testing.assert_close(result, torch.tensor([10 * math.log10(4), 0.0, 100.0]))


def test_psnr_mse_is_per_sample_not_pooled() -> None:
    target = torch.zeros(2, 3, 4, 4)
    pred = torch.zeros(2, 3, 4, 4)
    pred[0, 0, 0, 0] = 0.2  # [0, 1] error 0.1 on 1 of 48 elements
    pred[1] = 0.2  # everywhere
    expected = torch.tensor([10 * math.log10(48 / 0.01), 10 * math.log10(1 / 0.01)])
    torch.testing.assert_close(psnr(pred, target), expected)


def test_psnr_matches_8bit_psnr_of_uint8_frames() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(2, 3, 8, 8), dtype=np.uint8)
    b = a.copy()
    b[0, 1, 2, 3] = 255 - b[0, 1, 2, 3]  # one big error
    b[1] = np.clip(b[1].astype(int) + 5, 0, 255).astype(np.uint8)  # all shifted by up to 5 levels
    mse_u8 = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(2, -1).mean(axis=1)
    expected = torch.from_numpy(10 * np.log10(255.0**2 / mse_u8)).float()

    def scaled(u: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(u).float() / 127.5 - 1

    torch.testing.assert_close(psnr(scaled(b), scaled(a)), expected, atol=1e-4, rtol=1e-5)


def test_psnr_one_grey_level_error_on_a_2x2_frame() -> None:
    # uint8 frames [[10, 20], [30, 40]] vs one level 5 off: mse = 25 / 4 -> 10 log10(65025 / 6.25)
    a = torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]])
    b = torch.tensor([[[[10.0, 20.0], [30.0, 45.0]]]])
    result = psnr(b / 127.5 - 1, a / 127.5 - 1)
    assert result.item() == pytest.approx(10 * math.log10(65025 / 6.25), abs=1e-4)


def test_psnr_from_mse_and_the_floor() -> None:
    mse = torch.tensor([1.0, 0.01, 0.0, 1e-12])
    torch.testing.assert_close(psnr_from_mse(mse), torch.tensor([0.0, 20.0, 100.0, 100.0]))
    assert psnr_from_mse(torch.tensor(PSNR_MIN_MSE)).item() == pytest.approx(100.0)


def test_psnr_half_precision_keeps_the_floor() -> None:
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float16)
    result = psnr(x, x)
    assert result.dtype == torch.float32
    assert result.item() == pytest.approx(100.0)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"same shape, got \(1, 1, 2, 2\) and \(1, 3, 2, 2\)"):
        intensity_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="same shape"):
        gradient_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))
    with pytest.raises(ValueError, match="same shape"):
        flow_loss(torch.zeros(1, 2, 2, 2), torch.zeros(2, 2, 2, 2))
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(2, 1, 2, 2), torch.zeros(1, 1, 2, 2))


def test_losses_are_differentiable() -> None:
    torch.manual_seed(0)
    pred = (torch.rand(2, 2, 4, 5, dtype=torch.float64) * 2 - 1).requires_grad_()
    target = torch.rand(2, 2, 4, 5, dtype=torch.float64) * 2 - 1
    d_real = torch.rand(2, 1, 3, 3, dtype=torch.float64).requires_grad_()
    d_fake = torch.rand(2, 1, 3, 3, dtype=torch.float64).requires_grad_()
    for loss in (intensity_loss, gradient_loss, flow_loss, psnr):
        assert torch.autograd.gradcheck(lambda p, fn=loss: fn(p, target), (pred,))
    assert torch.autograd.gradcheck(lsgan_generator_loss, (d_fake,))
    assert torch.autograd.gradcheck(lsgan_discriminator_loss, (d_real, d_fake))


def test_intensity_gradient_is_analytic() -> None:
    pred = torch.tensor([[[[0.5, -0.5]]]], requires_grad=True)
    target = torch.tensor([[[[0.0, 0.0]]]])
    intensity_loss(pred, target).backward()
    # d/dP mean((P - G)^2) = 2 (P - G) / n
    torch.testing.assert_close(pred.grad, torch.tensor([[[[0.5, -0.5]]]]))


def test_l1_and_per_sample_reductions() -> None:
    pred = torch.tensor([[[[0.0, 0.5], [-1.0, 1.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    target = torch.tensor([[[[1.0, 0.5], [-0.5, 0.0]]], [[[1.0, 1.0], [1.0, 0.0]]]])
    # absolute errors: sample 0: 1, 0, 0.5, 1 -> 0.625; sample 1: 0, 0, 0, 1 -> 0.25
    torch.testing.assert_close(l1_loss(pred, target, "none"), torch.tensor([0.625, 0.25]))
    assert l1_loss(pred, target).item() == pytest.approx(0.4375)
    torch.testing.assert_close(intensity_loss(pred, target, "none"), torch.tensor([2.25 / 4, 0.25]))
    for zero_pad in (True, False):
        per_sample = gradient_loss(pred, target, zero_pad=zero_pad, reduction="none")
        assert per_sample.shape == (2,)
        assert per_sample.mean().item() == pytest.approx(gradient_loss(pred, target, zero_pad=zero_pad).item())
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'none'"):
        l1_loss(pred, target, "sum")  # type: ignore[arg-type]


@pytest.mark.parametrize(("size", "scales"), [(11, 1), (12, 2), (43, 2), (44, 3), (64, 3), (100, 4), (176, 5)])
def test_msssim_scales_fit_the_image_size(size: int, scales: int) -> None:
    assert msssim_scales(size) == scales
    image = torch.rand(1, 1, size, size) * 2 - 1
    msssim_loss(image, image * 0.5, scales)  # torchmetrics accepts it
    if scales < 5:
        with pytest.raises(Exception, match=r"."):
            msssim_loss(image, image * 0.5, scales + 1)


def test_msssim_loss_values() -> None:
    torch.manual_seed(0)
    a = torch.rand(2, 1, 64, 64) * 2 - 1
    b = (a * 0.7 + 0.3 * (torch.rand(2, 1, 64, 64) * 2 - 1)).clamp(-1, 1)
    torch.testing.assert_close(msssim_loss(a, a, 3, reduction="none"), torch.zeros(2))
    # one scale: MS-SSIM is SSIM (its exponent renormalised to 1)
    ssim = structural_similarity_index_measure((a + 1) / 2, (b + 1) / 2, data_range=1.0, reduction="none")
    torch.testing.assert_close(msssim_loss(a, b, 1, reduction="none"), (1 - ssim) / 2)
    assert msssim_loss(a, b, 3).item() == pytest.approx(msssim_loss(a, b, 3, reduction="none").mean().item())
    assert msssim_betas(5) == pytest.approx(MSSSIM_BETAS, rel=2e-4)  # the published five sum to 0.9999
    assert sum(msssim_betas(3)) == pytest.approx(1.0)
    assert msssim_betas(3)[0] == pytest.approx(0.0448 / (0.0448 + 0.2856 + 0.3001))


def test_gaussian_kl_exact() -> None:
    mu = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(2.0), 0.0]])
    # elements: 0, 0.5 | 0.5 (2 - 1 - ln 2), 0
    expected = torch.tensor([0.25, 0.25 * (1 - math.log(2.0))])
    torch.testing.assert_close(gaussian_kl(mu, logvar, "none"), expected)
    assert gaussian_kl(mu, logvar).item() == pytest.approx(expected.mean().item())
