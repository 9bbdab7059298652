"""One video's per-frame signals -> one anomaly score per frame: per-video normalisation and signed fusion.

One polarity everywhere: a higher score is more anomalous. Signed weights say how signals fuse: FFP ``{psnr: -1}``
(a low PSNR is anomalous), MNAD ``{psnr: -0.6, feature_distance: 0.4}``. Each weighted signal is normalised over its
video (:func:`minmax`, or :func:`divide_by_max` as AMC writes it), optionally smoothed along time first
(:func:`vad.evaluation.smoothing.smooth`), and the weights combine them (:func:`fuse`):

    score = fuse({"psnr": psnr, "feature_distance": distance}, {"psnr": -0.6, "feature_distance": 0.4})
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from vad.errors import ConfigError
from vad.evaluation.smoothing import smooth

NORMALISED = "per-video min-max"
DIVIDED_BY_MAX = "per-video division by the max"
RAW = "none (raw signals)"
#: the per-video normalisations of :func:`fuse` and :func:`vad.evaluation.protocol.evaluate`: name -> what
#: metrics.json records
NORMALISATIONS: dict[str, str] = {"minmax": NORMALISED, "max": DIVIDED_BY_MAX}


def _degenerate(x: np.ndarray) -> bool:
    """True when min-max normalisation is undefined: no values, a constant, or a non-finite range."""
    if x.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing range is reported, not warned about
        span = x.max() - x.min()
    return not np.isfinite(span) or span == 0


def minmax(x: np.ndarray | Sequence[float]) -> np.ndarray:
    """Min-max normalise one video's signal to [0, 1]: ``(x - min) / (max - min)``, float64.

    A constant signal (max == min) or a non-finite range (a NaN or inf among the values) returns zeros: the video
    offers no within-video evidence that any frame is more anomalous than another, and zero keeps the NaN of 0/0 out
    of the concatenated micro AUC.
    """
    x = np.asarray(x, dtype=np.float64)
    if _degenerate(x):
        return np.zeros_like(x)
    lo = x.min()
    return (x - lo) / (x.max() - lo)


def divide_by_max(x: np.ndarray | Sequence[float]) -> np.ndarray:
    """Divide one video's signal by its maximum: ``x / max(x)``, float64 (the per-video normalisation of AMC).

    For non-negative values this maps to [0, 1] and keeps the order. For NEGATIVE values (e.g. log scores) the
    maximum is the value closest to 0 and dividing by a negative number REVERSES the order: [-4, -2, -1] becomes
    [4, 2, 1], so the most anomalous frame gets the smallest value (min-max keeps the order whatever the sign). A
    constant non-zero signal becomes ones. A maximum of 0, a non-finite value (NaN or inf) among the values, or a
    quotient that overflows returns zeros, as :func:`minmax` does for its degenerate cases.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or not np.isfinite(x).all() or x.max() == 0:
        return np.zeros_like(x)
    with np.errstate(over="ignore"):  # a tiny maximum may overflow the quotient: reported as degenerate below
        out = x / x.max()
    return out if np.isfinite(out).all() else np.zeros_like(x)


def check_normalisation(normalisation: str) -> str:
    """Validate a per-video normalisation name (``"minmax"`` or ``"max"``); raises ConfigError naming the valid
    ones."""
    if normalisation not in NORMALISATIONS:
        raise ConfigError(f"normalisation={normalisation!r} is not one of {list(NORMALISATIONS)}")
    return normalisation


def check_weights(weights: Mapping[str, float], available: Iterable[str]) -> dict[str, float]:
    """Validate signed fusion weights against the signals a method emits; returns the non-zero ones as floats.

    Raises ConfigError for an unknown signal name (listing the available ones), a non-finite weight, or when no
    weight is non-zero.
    """
    available = list(available)
    parsed = {str(k): float(v) for k, v in weights.items()}
    unknown = [k for k in parsed if k not in available]
    if unknown:
        raise ConfigError(
            f"score weights name unknown signal(s) {unknown}; this method emits {available}: fix the score weights"
        )
    bad = [k for k, v in parsed.items() if not math.isfinite(v)]
    if bad:
        raise ConfigError(f"score weights {bad} are not finite numbers: give each a finite signed weight")
    nonzero = {k: v for k, v in parsed.items() if v != 0}
    if not nonzero:
        raise ConfigError(
            f"score weights {parsed or '{}'} are empty or all zero: weight at least one of {available}, "
            "e.g. {psnr: -1} (negative = a low value is anomalous)"
        )
    return nonzero


def _evidence(x: np.ndarray, positive: bool, normalisation: str = "minmax") -> np.ndarray:
    """g(x) for a positive weight, 1 - g(x) for a negative one, g the per-video normalisation; zeros when g is
    degenerate (see :func:`minmax` and :func:`divide_by_max`)."""
    if normalisation == "max":
        g = divide_by_max(x)
        degenerate = not g.any()  # divide_by_max returns all zeros exactly in its degenerate cases
    else:
        g = minmax(x)
        degenerate = _degenerate(x)
    return g if positive or degenerate else 1.0 - g


def fuse(
    signals: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    normalise: bool = True,
    normalisation: str = "minmax",
    smoothing: float = 0.0,
) -> np.ndarray:
    """Fuse one video's signals (name -> (F,) raw values) into an anomaly score (F,) float64.

    With ``normalise``: ``(sum_{w>0} w g(s) + sum_{w<0} |w| (1 - g(s))) / sum |w|`` with g the per-video
    normalisation. ``normalisation="minmax"`` (default): g is :func:`minmax`, so the score lies in [0, 1] and MNAD's
    ``a (1 - g(PSNR)) + (1 - a) g(D)`` is ``{psnr: -a, feature_distance: 1-a}``; a signal with no within-video spread
    contributes 0 whatever its sign (no evidence of anomaly). ``normalisation="max"``: g is :func:`divide_by_max`,
    ``s / max(s)`` over the video, with the same ``1 - g`` for a negative weight; a signal whose g is degenerate (all
    zeros: a maximum of 0 or a non-finite value) contributes 0 whatever its sign, a constant non-zero signal
    contributes ``w`` (g = 1) for a positive weight and 0 for a negative one. The score lies in [0, 1] only for
    non-negative signals: for a signal with negative values g reverses their order (see :func:`divide_by_max`).
    Without ``normalise``: ``sum w s`` on the raw values (``normalisation`` is still validated, and ignored).
    ``smoothing``: each weighted signal is first filtered along time with a Gaussian of that many frames
    (:func:`smooth`), with or without ``normalise``.
    """
    check_normalisation(normalisation)
    w = check_weights(weights, signals)
    length = len(next(iter(signals.values())))
    score = np.zeros(length, dtype=np.float64)
    for name, weight in w.items():
        values = smooth(signals[name], smoothing)
        score += weight * values if not normalise else abs(weight) * _evidence(values, weight > 0, normalisation)
    return score / sum(abs(v) for v in w.values()) if normalise else score
