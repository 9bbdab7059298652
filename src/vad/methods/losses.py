"""Losses of the frame-prediction family and the suite's one PSNR; each function's docstring states its formula.

    loss = intensity_loss(pred, target) + gradient_loss(pred, target) + 0.05 * lsgan_generator_loss(disc(pred))
    score = psnr(pred, target)                           # (N,) dB, the per-frame normality signal
    per_frame = l1_loss(pred, target, "none") + msssim_loss(pred, target, scales=3, reduction="none")   # (N,)

Images are (N, C, H, W) in [-1, 1], flows (N, 2, H, W) in pixels, discriminator outputs (N, 1, h, w) in [0, 1].
"Mean" is over every element of the batch; a loss with a ``reduction`` argument gives with ``"none"`` its per-sample
values (N,) instead, whose mean over the batch is the ``"mean"`` value. Inputs that should match in shape must match
exactly: a broadcast between, say, (N, 1, H, W) and (N, 3, H, W) would silently compute something else, so it raises
ValueError.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

Reduction = Literal["mean", "none"]

#: MS-SSIM exponents of the five scales, finest first (Wang, Simoncelli, Bovik 2003)
MSSSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

# PSNR's MSE floor (on the [0, 1] scale): identical images score 10 log10(1 / 1e-10) = 100 dB instead of +inf, far
# above any real prediction (25-45 dB) yet finite, so per-video normalisation and AUC stay defined.
PSNR_MIN_MSE = 1e-10


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _reduce(per_element: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """Mean over everything (``"mean"``) or over all but the first dimension (``"none"``: (N,))."""
    if reduction == "mean":
        return per_element.mean()
    if reduction == "none":
        return per_element.flatten(1).mean(dim=1)
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def intensity_loss(pred: torch.Tensor, target: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """L_int = mean((P - G)^2); P, G (N, C, H, W) in [-1, 1] -> scalar (or (N,) with ``reduction="none"``)."""
    _check_same_shape(pred, target, "pred and target")
    return _reduce((pred - target).square(), reduction)


def l1_loss(pred: torch.Tensor, target: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """L_1 = mean(|P - G|); P, G (N, C, H, W) in [-1, 1] -> scalar (or (N,) with ``reduction="none"``)."""
    _check_same_shape(pred, target, "pred and target")
    return _reduce((pred - target).abs(), reduction)


def _abs_gradients(x: torch.Tensor, zero_pad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """|dx|, |dy| of (..., H, W): differences with the right / lower neighbour."""
    if zero_pad:
        # The official code's 'SAME' [-1, 1] filters pad one zero column on the right and one zero row at the bottom.
        x_wide = F.pad(x, (0, 1))
        x_tall = F.pad(x, (0, 0, 0, 1))
        dx = x_wide[..., :, 1:] - x_wide[..., :, :-1]
        dy = x_tall[..., 1:, :] - x_tall[..., :-1, :]
    else:
        dx = x[..., :, 1:] - x[..., :, :-1]
        dy = x[..., 1:, :] - x[..., :-1, :]
    return dx.abs(), dy.abs()


def gradient_loss(
    pred: torch.Tensor, target: torch.Tensor, zero_pad: bool = True, reduction: Reduction = "mean"
) -> torch.Tensor:
    """L_gd = mean(| |dx P| - |dx G| |) + mean(| |dy P| - |dy G| |); P, G (N, C, H, W) -> scalar (or (N,)).

    dx[i, j] = X[i, j+1] - X[i, j], dy[i, j] = X[i+1, j] - X[i, j]. With ``zero_pad`` (FFP's official code) X is
    padded with one zero column on the right and one zero row at the bottom, so dx and dy are (H, W) and the last
    column's dx is -X[:, -1] (last row's dy is -X[-1, :]); the loss then equals FFP's mean(dx term + dy term).
    Without padding (the gradient difference loss of Mathieu et al., used by r-GAN) only interior differences count:
    dx is (H, W-1), dy is (H-1, W), each term averaged over its own elements.
    """
    _check_same_shape(pred, target, "pred and target")
    pred_dx, pred_dy = _abs_gradients(pred, zero_pad)
    target_dx, target_dy = _abs_gradients(target, zero_pad)
    return _reduce((pred_dx - target_dx).abs(), reduction) + _reduce((pred_dy - target_dy).abs(), reduction)


def msssim_scales(size: int, kernel_size: int = 11, most: int = 5) -> int:
    """The number of MS-SSIM scales (at most ``most``) that images of side ``size`` allow.

    torchmetrics' MS-SSIM over n scales checks size >= 2**n and size // max(1, n - 1)**2 > kernel_size - 1, and its
    reflect padding of (kernel_size - 1) / 2 needs the coarsest scale, size // 2**(n - 1), to be larger than that
    (with the 11-tap window: 5 scales from 176 px, 4 from 100, 3 from 44, 2 from 12, 1 from 11). ValueError when
    not even one scale fits.
    """
    for n in range(most, 0, -1):
        fits_check = size >= 2**n and size // max(1, n - 1) ** 2 > kernel_size - 1
        if fits_check and size // 2 ** (n - 1) > (kernel_size - 1) // 2:
            return n
    raise ValueError(f"images of side {size} px are too small for MS-SSIM with an {kernel_size}-px window")


def msssim_betas(scales: int) -> tuple[float, ...]:
    """The exponents of the ``scales`` finest MS-SSIM scales, renormalised to sum to 1 as the five do (so that
    MS-SSIM stays in [0, 1] and 1 for identical images whatever the number of scales)."""
    if not 1 <= scales <= len(MSSSIM_BETAS):
        raise ValueError(f"MS-SSIM scales must be 1..{len(MSSSIM_BETAS)}, got {scales}")
    kept = MSSSIM_BETAS[:scales]
    return tuple(b / sum(kept) for b in kept)


def msssim_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    scales: int,
    kernel_size: int = 11,
    sigma: float = 1.5,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """L_ms = (1 - MS-SSIM(P, G)) / 2 over ``scales`` scales (r-GAN's form); P, G (N, C, H, W) in [-1, 1].

    MS-SSIM (Wang et al. 2003) = l_M^b_M prod_j cs_j^b_j over the scales j (each a 2x average-pool of the previous),
    computed by torchmetrics on the images mapped to [0, 1] (data range 1, K1 0.01, K2 0.03, Gaussian window of
    ``kernel_size`` taps and ``sigma``), negative contrast-structure terms clamped to 0 ("relu" normalisation, so the
    fractional powers stay defined while training), exponents :func:`msssim_betas`. -> scalar, or (N,) with
    ``reduction="none"``. Computed in at least float32.
    """
    _check_same_shape(pred, target, "pred and target")
    dtype = torch.promote_types(pred.dtype, torch.float32)
    value = multiscale_structural_similarity_index_measure(
        (pred.to(dtype) + 1) / 2,
        (target.to(dtype) + 1) / 2,
        kernel_size=kernel_size,
        sigma=sigma,
        data_range=1.0,
        betas=msssim_betas(scales),
        normalize="relu",
        reduction="none",
    )
    per_sample = (1 - value) / 2
    return per_sample.mean() if reduction == "mean" else _reduce(per_sample[:, None], reduction)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per latent element, 0.5 (mu^2 + exp(logvar) - 1 - logvar), averaged over
    the elements; mu, logvar (N, ...) -> scalar, or (N,) with ``reduction="none"``. Computed in at least float32."""
    _check_same_shape(mu, logvar, "mu and logvar")
    dtype = torch.promote_types(mu.dtype, torch.float32)
    mu, logvar = mu.to(dtype), logvar.to(dtype)
    return _reduce(0.5 * (mu.square() + logvar.exp() - 1 - logvar), reduction)


def flow_loss(flow_pred: torch.Tensor, flow_target: torch.Tensor) -> torch.Tensor:
    """L_op = mean(|F_pred - F_target|) (L1); flows (N, 2, H, W) in pixels -> scalar.

    In FFP F_pred = F(I_t, P) and F_target = F(I_t, G) from a frozen flow network: do not detach ``flow_pred``, the
    generator's gradient must flow through the flow network's input P.
    """
    _check_same_shape(flow_pred, flow_target, "flow_pred and flow_target")
    return (flow_pred - flow_target).abs().mean()


def lsgan_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """L_adv = mean((D(P) - 1)^2 / 2); D(P) (N, 1, h, w) in [0, 1] -> scalar."""
    return (d_fake - 1).square().mean() / 2


def lsgan_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """L_D = mean((D(G) - 1)^2 / 2) + mean(D(P)^2 / 2); D(G), D(P) (N, 1, h, w) in [0, 1] -> scalar.

    Pass D(P) computed on a detached prediction so the discriminator step does not reach the generator.
    """
    return (d_real - 1).square().mean() / 2 + d_fake.square().mean() / 2


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR = 10 log10(1 / max(mse, PSNR_MIN_MSE)) in dB, for an MSE of images in [0, 1] (peak 1); elementwise."""
    return 10 * torch.log10(1 / mse.clamp_min(PSNR_MIN_MSE))


def squared_error_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel squared error of (N, C, H, W) images in [-1, 1] on the [0, 1] scale of :func:`psnr`, averaged over
    the channels: ((pred - target) / 2)^2 -> (N, H, W), in at least float32. Its mean over the pixels is the MSE of
    the PSNR; it is the error map of the frame predictors' patch scores and of ``VADModule.error_maps``."""
    _check_same_shape(pred, target, "pred and target")
    dtype = torch.promote_types(pred.dtype, torch.float32)
    return ((pred.to(dtype) - target.to(dtype)) / 2).square().mean(dim=1)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR in dB of (N, C, H, W) images in [-1, 1] -> (N,), the suite's only PSNR.

    Both images are mapped to [0, 1] by (x + 1) / 2, mse_n = mean over (C, H, W) of the squared difference, and
    PSNR_n = 10 log10(1 / mse_n), capped at 100 dB for identical images (see ``PSNR_MIN_MSE``). For frames decoded
    from uint8 u as u / 127.5 - 1 this equals the usual 8-bit PSNR 10 log10(255^2 / mse(u_pred, u_target)).
    Computed in at least float32 so half-precision inputs do not underflow the floor.
    """
    _check_same_shape(pred, target, "pred and target")
    dtype = torch.promote_types(pred.dtype, torch.float32)
    mse = ((pred.to(dtype) - target.to(dtype)) / 2).square().flatten(1).mean(dim=1)
    return psnr_from_mse(mse)


def compactness_loss(queries: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """MNAD feature compactness L_compact = mean((q_k - p_k)^2) over every query and channel; (K, C) -> scalar.

    q_k the L2-normalised queries, p_k the memory item nearest to each (no gradient). The paper writes a sum of
    squared distances; the reference code (whose weights 0.1 / 0.01 the suite uses) takes the mean, as here.
    """
    _check_same_shape(queries, positives, "queries and positives")
    return (queries - positives).square().mean()


def separateness_loss(
    queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, margin: float = 1.0
) -> torch.Tensor:
    """MNAD feature separateness: mean_k max(0, ||q_k - p_k|| - ||q_k - n_k|| + margin); (K, C) each -> scalar.

    A triplet loss with the query as anchor, its nearest item p_k as positive and its second-nearest item n_k as
    negative; distances are Euclidean, computed as ``F.pairwise_distance`` (1e-6 added to each difference).
    """
    _check_same_shape(queries, positives, "queries and positives")
    _check_same_shape(queries, negatives, "queries and negatives")
    return F.triplet_margin_loss(queries, positives, negatives, margin=margin)


def weighted_regular_score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MNAD's test-time gate: (N, C, H, W) images in [-1, 1] -> (N,) weighted squared error on the [0, 1] scale.

    With e = ((P - G) / 2)^2 elementwise and w = 1 - exp(-e): score_n = sum(w e) / sum(w) over the sample's elements,
    so large errors dominate. This is the reference code's form (squared errors), against which its thresholds
    0.01 / 0.015 were set; a perfect prediction (all e = 0) scores 0. Computed in at least float32.
    """
    _check_same_shape(pred, target, "pred and target")
    dtype = torch.promote_types(pred.dtype, torch.float32)
    error = ((pred.to(dtype) - target.to(dtype)) / 2).square().flatten(1)
    weight = 1 - torch.exp(-error)
    return (weight * error).sum(dim=1) / weight.sum(dim=1).clamp_min(torch.finfo(dtype).tiny)
