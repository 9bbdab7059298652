"""Temporal smoothing of per-frame scores: centred for the offline protocol, causal for streams. One module, one
check of the width ``sigma`` (frames), one rule for which width a stream uses.

The protocol smooths each weighted signal of a whole video with a centred Gaussian (:func:`smooth`,
``model.smoothing``); a stream has only the frames seen so far, so its scores are smoothed with a one-sided Gaussian
over the current and the past ``ceil(3 sigma)`` frames (:func:`causal_smooth` for an array, :class:`CausalSmoother`
value by value). ``vad.score`` and ``vad.calibrate`` take a ``smoothing=`` override (:func:`given_smoothing`) that
wins over the width a run or a calibration holds (:func:`smoothing_or`).

    smoothed = smooth(psnr_of_one_video, sigma=2.0)                 # centred, float64, same length
    live = CausalSmoother(smoothing_or(cfg.smoothing, calibration.smoothing))
    score = live.push(frame_score)                                  # one frame at a time
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from vad.errors import ConfigError


def smooth(x: np.ndarray | Sequence[float], sigma: float) -> np.ndarray:
    """One video's signal filtered along time with a normalised Gaussian of standard deviation ``sigma`` frames,
    float64 of the same length.

    The kernel spans ``ceil(3 sigma)`` frames each side; the first and last values are repeated past the ends (so a
    constant stays constant and the ends are not pulled towards 0). ``sigma=0`` returns the values unchanged. A
    non-finite value spreads over its neighbours, as it would in any filter: drop such frames first (``evaluate``
    does). The frames are taken as consecutive: a frame the method could not score is skipped, not interpolated.
    """
    x = np.asarray(x, dtype=np.float64)
    sigma = check_smoothing(sigma)
    if sigma == 0 or x.size < 2:
        return x.copy()
    radius = math.ceil(3 * sigma)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(x, radius, mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def check_smoothing(sigma: float, key: str = "model.smoothing") -> float:
    """Validate a temporal smoothing width (frames, >= 0, finite); raises ConfigError naming the key."""
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not math.isfinite(sigma) or sigma < 0:
        raise ConfigError(f"{key}={sigma!r} must be a finite number of frames >= 0 (0: no temporal smoothing)")
    return float(sigma)


def given_smoothing(sigma: float | None) -> float | None:
    """The ``smoothing=`` of ``vad.score`` / ``vad.calibrate``: None when not given, else checked as a width in
    frames (:func:`check_smoothing`, naming the key ``smoothing``)."""
    return None if sigma is None else check_smoothing(sigma, "smoothing")


def smoothing_or(sigma: float | None, default: float) -> float:
    """The smoothing of a stream's scores: ``sigma`` (a ``smoothing=`` override, checked) when given, else
    ``default`` (the run's ``model.smoothing`` for a new calibration; a calibration's own for scoring, which its
    thresholds hold for)."""
    given = given_smoothing(sigma)
    return default if given is None else given


def causal_kernel(sigma: float) -> np.ndarray:
    """The weights of the current frame and the ``ceil(3 sigma)`` frames before it (index k: k frames back):
    a one-sided Gaussian of standard deviation ``sigma`` frames, normalised; ``[1.0]`` for ``sigma=0``."""
    sigma = check_smoothing(sigma, "smoothing")
    if sigma == 0:
        return np.ones(1)
    back = np.arange(math.ceil(3 * sigma) + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (back / sigma) ** 2)
    return kernel / kernel.sum()


def causal_smooth(x: np.ndarray | Sequence[float], sigma: float) -> np.ndarray:
    """One input's scores smoothed with :func:`causal_kernel`: each value from itself and the values before it
    only, the first value repeated before the start (a constant stays constant); what :class:`CausalSmoother` gives
    value by value. A non-finite value is passed through and skipped by its neighbours, as a frame that could not be
    scored. ``sigma=0`` returns the values unchanged (float64)."""
    x = np.asarray(x, dtype=np.float64)
    kernel = causal_kernel(sigma)
    finite = np.isfinite(x)
    out = x.copy()
    if kernel.size == 1 or not finite.any():
        return out
    values = x[finite]
    padded = np.concatenate([np.full(kernel.size - 1, values[0]), values])
    # out[i] = sum_k kernel[k] * padded[i + K - k] (np.convolve flips its second argument)
    out[finite] = np.convolve(padded, kernel, mode="valid")
    return out


class CausalSmoother:
    """:func:`causal_smooth` one value at a time, for a stream: ``push(score)`` returns the smoothed score of the
    frame just scored; a new input starts with a new smoother."""

    def __init__(self, sigma: float) -> None:
        self.kernel = causal_kernel(sigma)
        self.recent: deque[float] = deque(maxlen=self.kernel.size)

    def push(self, value: float) -> float:
        value = float(value)
        if self.kernel.size == 1 or not math.isfinite(value):
            return value
        if not self.recent:
            self.recent.extend([value] * (self.kernel.size - 1))  # the first value repeated before the start
        self.recent.append(value)
        # recent[-1 - k] is k frames back
        return float(np.dot(self.kernel, np.asarray(self.recent)[::-1]))
