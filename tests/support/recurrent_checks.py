"""Checks shared by the tests of the recurrent predictors (r-GAN, r-GAN*, r-VAE)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def first_frame_matters(predict: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor) -> bool:
    """Whether perturbing only the FIRST input frame changes the prediction.

    ``predict``: (N, t, C, H, W) input frames -> (N, C, H, W) prediction (deterministic: eval mode, no sampling).
    A recurrent predictor whose state persists across the t steps must pass; one that restarts its state at every
    step (the released r-GAN code) predicts from the last frame only and fails.
    """
    with torch.no_grad():
        reference = predict(frames)
        perturbed = frames.clone()
        perturbed[:, 0] = -perturbed[:, 0]
        assert torch.equal(perturbed[:, 1:], frames[:, 1:])
        return not torch.allclose(predict(perturbed), reference, atol=1e-6, rtol=0)
