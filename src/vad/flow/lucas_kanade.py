"""Pyramidal Lucas-Kanade optical flow in pure torch: weight-free and differentiable w.r.t. both frames.

Coarse to fine over a Gaussian pyramid; at each level the second frame is warped by the current flow
(``grid_sample``) and a few Gauss-Newton steps solve, at every pixel, the 2x2 least-squares system of the linearised
brightness constancy over a Gaussian window (the flow is smoothed by that window after each step). Every operation
is smooth, so a loss on the flow sends gradients to both frames (the FFP flow loss on CPU runs and in tests).

    flow = LucasKanade(levels=3, iterations=3)
    uv = flow(a, b)        # (N, 2, H, W) pixels, b(x + uv(x)) ≈ a(x)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from vad.errors import ConfigError
from vad.flow.base import FlowEstimator, to_grey, warp


def gaussian_kernel(sigma: float) -> Tensor:
    """1-D normalised Gaussian taps, radius ceil(2.5 sigma)."""
    radius = max(1, math.ceil(2.5 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    return (taps / taps.sum()).float()


def separable_blur(x: Tensor, taps: Tensor) -> Tensor:
    """Blur every channel of (N, C, H, W) with the 1-D ``taps`` along x then y, edges replicated."""
    channels = x.shape[1]
    radius = taps.numel() // 2
    taps = taps.to(dtype=x.dtype)
    row = taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    col = taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), row, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), col, groups=channels)


def central_gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    """(d/dx, d/dy) of (N, C, H, W) by central differences, one-sided at the edges (replicated border)."""
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    dx = 0.5 * (padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2])
    dy = 0.5 * (padded[:, :, 2:, 1:-1] - padded[:, :, :-2, 1:-1])
    return dx, dy


class LucasKanade(FlowEstimator):
    """Coarse-to-fine iterative Lucas-Kanade (no weights).

    Args:
        levels: pyramid levels (each halves the size); the largest recoverable motion grows as 2**levels pixels.
        iterations: warp + solve steps per level.
        window_sigma: standard deviation (pixels, at every level) of the Gaussian window over which each pixel's
            least-squares system is summed; larger = smoother, more robust, blurrier flow.
        smooth_sigma: Gaussian pre-smoothing of the frames before the pyramid (suppresses noise and aliasing).
        regularization: Tikhonov term added to the diagonal of each 2x2 system, in (intensity units / pixel)^2 with
            images in [-1, 1]; keeps textureless regions at zero update instead of dividing by ~0.
        input_size: (H, W) to estimate at (see :class:`FlowEstimator`); None: the frames' own size.
    """

    differentiable = True

    def __init__(
        self,
        levels: int = 3,
        iterations: int = 3,
        window_sigma: float = 2.0,
        smooth_sigma: float = 1.0,
        regularization: float = 1e-4,
        input_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__(input_size)
        if levels < 1 or iterations < 1:
            raise ConfigError(f"flow.levels={levels}, flow.iterations={iterations}: both must be at least 1")
        if window_sigma <= 0 or smooth_sigma <= 0 or regularization <= 0:
            raise ConfigError(
                f"flow.window_sigma={window_sigma}, flow.smooth_sigma={smooth_sigma}, "
                f"flow.regularization={regularization}: all must be positive"
            )
        self.levels = levels
        self.iterations = iterations
        self.regularization = regularization
        # Buffers follow .to(device); not persistent, so the state_dict stays empty like the estimator's weights.
        self.register_buffer("window_taps", gaussian_kernel(window_sigma), persistent=False)
        self.register_buffer("smooth_taps", gaussian_kernel(smooth_sigma), persistent=False)
        self.register_buffer("pyramid_taps", gaussian_kernel(1.0), persistent=False)
        self.freeze()

    def pyramid(self, x: Tensor) -> list[Tensor]:
        """(N, 1, H, W) -> [finest, ..., coarsest]; each level is the previous one blurred and subsampled by 2."""
        levels = [x]
        for _ in range(self.levels - 1):
            levels.append(separable_blur(levels[-1], self.pyramid_taps)[:, :, ::2, ::2])
        return levels

    def refine(self, a: Tensor, b: Tensor, flow: Tensor) -> Tensor:
        """One Gauss-Newton step at one level, then a window smoothing: (N, 1, h, w) pair, (N, 2, h, w) flow -> flow."""
        b_warped = warp(b, flow)
        # Gradients of the mean of both frames: symmetric, and exact to first order for a pure translation.
        gx, gy = central_gradients(0.5 * (a + b_warped))
        gt = b_warped - a
        sums = separable_blur(torch.cat((gx * gx, gx * gy, gy * gy, gx * gt, gy * gt), dim=1), self.window_taps)
        sxx, sxy, syy, sxt, syt = sums.unbind(dim=1)
        sxx = sxx + self.regularization
        syy = syy + self.regularization
        det = sxx * syy - sxy * sxy
        # Solve [sxx sxy; sxy syy] d = -[sxt; syt] so that b_warped(x + d) ≈ a(x).
        du = (sxy * syt - syy * sxt) / det
        dv = (sxy * sxt - sxx * syt) / det
        # Smoothing the flow by the window enforces the window's constant-motion assumption; without it, the per-pixel
        # noise that warping adds is never damped and the error grows with every iteration (measured on a 1.5 px
        # shift: 0.04 px error after one step, 0.10 px after ten; 0.03 px after either with the smoothing).
        return separable_blur(flow + torch.stack((du, dv), dim=1), self.window_taps)

    def compute(self, a: Tensor, b: Tensor) -> Tensor:
        """(N, 1 or 3, H, W) pair in [-1, 1] -> (N, 2, H, W) flow from ``a`` to ``b`` in pixels."""
        # The 2x2 solves divide by products of small window sums: half precision would underflow, so mixed-precision
        # training still runs the estimator in float32.
        with torch.autocast(a.device.type, enabled=False):
            return self.estimate(a.float(), b.float()).to(a.dtype)

    def estimate(self, a: Tensor, b: Tensor) -> Tensor:
        """The coarse-to-fine estimation on float32 inputs (see ``forward``)."""
        pyramid_a = self.pyramid(separable_blur(to_grey(a), self.smooth_taps))
        pyramid_b = self.pyramid(separable_blur(to_grey(b), self.smooth_taps))
        coarsest = pyramid_a[-1]
        flow = coarsest.new_zeros(coarsest.shape[0], 2, *coarsest.shape[2:])
        for level_a, level_b in zip(reversed(pyramid_a), reversed(pyramid_b), strict=True):
            if flow.shape[2:] != level_a.shape[2:]:
                # Subsampling kept pixels 0, 2, 4, ...: coarse pixel i sits on fine pixel 2i, hence align_corners.
                flow = 2.0 * F.interpolate(flow, size=level_a.shape[2:], mode="bilinear", align_corners=True)
            for _ in range(self.iterations):
                flow = self.refine(level_a, level_b, flow)
        return flow
