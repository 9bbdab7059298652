"""Calibration: scores a stream can use, and alert thresholds set for a false-alarm rate on normal footage.

The protocol of the literature normalises each signal by its min and max over the whole test video, which a live
stream does not have, and it makes every video, even a normal one, reach 1.0. A calibrated score instead measures
each frame against the signals' distribution on normal frames held out from training:

    z_s = (s - median_s) / scale_s          scale_s = 1.4826 MAD_s (the std of a normal distribution), per signal
    score = sum_s |w_s| sign(w_s) z_s / sum_s |w_s|        w = the method's signed fusion weights (model.score)

so a normal frame scores about 0 and the score counts robust standard deviations towards "anomalous". The alert
threshold is the (1 - fpr) quantile of the calibration frames' scores: on footage like the calibration frames,
a fraction ``fpr`` of the frames raise an alert (``threshold.fpr``, by default :data:`DEFAULT_FPR`), or a threshold
is given explicitly.

A stream's score can be smoothed over time as the protocol smooths a video's (``model.smoothing``), but only with
the frames seen so far: ``smoothing`` is the standard deviation, in frames, of a one-sided (causal) Gaussian over the
current and the past ``ceil(3 sigma)`` frames (:mod:`vad.evaluation.smoothing`). The calibration
frames' scores are smoothed the same way, video by video, before their quantiles are taken, so the threshold keeps
its false-alarm rate on smoothed scores. A run's calibration takes its ``model.smoothing``; ``vad.calibrate
smoothing=<sigma>`` sets another.

    calibration = Calibration.fit({"psnr": psnr_values}, {"psnr": -1.0}, source="held-out videos 03, 12",
                                  smoothing=2.0, videos=video_of_each_frame)
    scores = calibration.stream_scores({"psnr": new_psnr})   # (N,) calibrated scores of one input, smoothed
    alerts = scores > calibration.threshold(fpr=DEFAULT_FPR)
    metrics = calibrated_metrics(calibration, protocol_result)   # a test scored as a stream, beside the protocol

Stored in checkpoints as a plain dict (:meth:`Calibration.to_dict`) under ``vad_calibration``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from vad.errors import ConfigError
from vad.evaluation.protocol import ProtocolResult
from vad.evaluation.smoothing import causal_smooth, check_smoothing

#: checkpoint key of the calibration
CHECKPOINT_KEY = "vad_calibration"
#: 1 / Phi^-1(3/4): the MAD of a normal distribution times this is its standard deviation
MAD_TO_STD = 1.4826
#: calibration scores kept (sorted) for thresholds at any rate: at most this many, evenly spaced quantiles
KEPT_SCORES = 4001
#: the false-alarm rate of the alert threshold: ``vad.score``'s default (``threshold.fpr`` in conf/score.yaml holds the
#: same value), the threshold ``vad.evaluate``'s test reports and ``vad.calibrate`` prints
DEFAULT_FPR = 0.01


@dataclass
class SignalStats:
    """A signal's centre and robust scale on the calibration frames."""

    median: float
    scale: float
    mean: float
    std: float

    @classmethod
    def of(cls, values: np.ndarray) -> SignalStats:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValueError("no finite calibration values")
        median = float(np.median(values))
        scale = MAD_TO_STD * float(np.median(np.abs(values - median)))
        std = float(values.std())
        if not scale > 0:  # more than half the values equal: fall back to the std, then to 1
            scale = std if std > 0 else 1.0
        return cls(median=median, scale=scale, mean=float(values.mean()), std=std)


@dataclass
class Calibration:
    """Per-signal statistics and the sorted calibrated scores of the calibration frames (see the module docstring).

    ``weights``: the fusion weights the scores were computed with; ``source``: which frames (for the report);
    ``frames``: how many; ``smoothing``: the causal smoothing (sigma, frames) of the stream scores, with which the
    kept calibration scores were smoothed too (0: none).
    """

    stats: dict[str, SignalStats]
    weights: dict[str, float]
    scores: np.ndarray
    source: str
    frames: int
    smoothing: float = 0.0

    @classmethod
    def fit(
        cls,
        signals: Mapping[str, np.ndarray],
        weights: Mapping[str, float],
        *,
        source: str,
        smoothing: float = 0.0,
        videos: np.ndarray | Sequence[int] | None = None,
    ) -> Calibration:
        """Calibrate on the normal frames' raw signals (name -> (N,) values, in time order within each video) for
        the fusion ``weights``; with ``smoothing``, their scores are smoothed causally video by video (``videos``:
        the (N,) video of each frame, default all one video) before the threshold quantiles are kept."""
        weights = {k: float(v) for k, v in weights.items() if v}
        missing = sorted(set(weights) - set(signals))
        if missing:
            raise ValueError(f"calibration signals lack {missing} (weighted by the score)")
        smoothing = check_smoothing(smoothing, "smoothing")
        stats = {name: SignalStats.of(np.asarray(values)) for name, values in signals.items()}
        calibration = cls(stats=stats, weights=weights, scores=np.zeros(0), source=source, frames=0,
                          smoothing=smoothing)  # fmt: skip
        scores = calibration.score(signals)
        if smoothing:
            ids = np.zeros(len(scores), dtype=np.int64) if videos is None else np.asarray(videos)
            if ids.shape != scores.shape:
                raise ValueError(f"videos has shape {ids.shape}, the signals {scores.shape}")
            scores = scores.copy()
            for video in np.unique(ids):
                mine = ids == video
                scores[mine] = causal_smooth(scores[mine], smoothing)  # never across two videos
        scores = np.sort(scores[np.isfinite(scores)])
        if scores.size == 0:
            raise ValueError("no calibration frame has finite signals")
        calibration.frames = int(scores.size)
        if scores.size > KEPT_SCORES:
            scores = np.quantile(scores, np.linspace(0.0, 1.0, KEPT_SCORES))
        calibration.scores = scores
        return calibration

    def score(self, signals: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None) -> np.ndarray:
        """Calibrated scores (N,) of raw signals, frame by frame (not smoothed); ``weights`` default to the
        calibration's own."""
        weights = self.weights if weights is None else {k: float(v) for k, v in weights.items() if v}
        unknown = sorted(set(weights) - set(self.stats))
        if unknown:
            raise ConfigError(f"score weights name signal(s) {unknown} that the calibration does not know")
        total = sum(abs(w) for w in weights.values())
        out = None
        for name, weight in weights.items():
            stat = self.stats[name]
            z = (np.asarray(signals[name], dtype=np.float64) - stat.median) / stat.scale
            part = abs(weight) * math.copysign(1.0, weight) * z
            out = part if out is None else out + part
        assert out is not None
        return out / total

    def stream_scores(
        self, signals: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """The scores ``vad.score`` gives one input's consecutive frames: :meth:`score`, then the causal smoothing
        of the calibration, which its thresholds hold for."""
        return causal_smooth(self.score(signals, weights), self.smoothing)

    def threshold(self, fpr: float) -> float:
        """The alert threshold of false-alarm rate ``fpr`` on the calibration frames: their (1 - fpr) quantile."""
        if not 0.0 < fpr < 1.0:
            raise ConfigError(f"threshold.fpr must lie in (0, 1), got {fpr}")
        return float(np.quantile(self.scores, 1.0 - fpr, method="higher"))

    def false_alarm_rate(self, threshold: float) -> float:
        """The fraction of calibration frames scoring above ``threshold``."""
        return float((self.scores > threshold).mean())

    def to_dict(self) -> dict[str, Any]:
        return {
            "stats": {k: vars(v) for k, v in self.stats.items()},
            "weights": dict(self.weights),
            "scores": self.scores.tolist(),
            "source": self.source,
            "frames": self.frames,
            "smoothing": self.smoothing,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(
            stats={k: SignalStats(**v) for k, v in data["stats"].items()},
            weights=dict(data["weights"]),
            scores=np.asarray(data["scores"], dtype=np.float64),
            source=str(data["source"]),
            frames=int(data["frames"]),
            smoothing=float(data.get("smoothing", 0.0)),  # calibrations written before it existed: none
        )


def alert_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall and false-alarm rate of ``scores > threshold`` against 0/1 labels."""
    alerts = np.asarray(scores) > threshold
    labels = np.asarray(labels).astype(bool)
    tp = int((alerts & labels).sum())
    fp = int((alerts & ~labels).sum())
    fn = int((~alerts & labels).sum())
    negatives = int((~labels).sum())
    return {
        "precision": tp / (tp + fp) if tp + fp else math.nan,
        "recall": tp / (tp + fn) if tp + fn else math.nan,
        "false_alarm_rate": fp / negatives if negatives else math.nan,
        "alerts": int(alerts.sum()),
    }


def events(
    times: np.ndarray, frames: np.ndarray, scores: np.ndarray, alerts: np.ndarray, *, gap: int = 0
) -> list[dict[str, Any]]:
    """Anomalous intervals: maximal runs of alerted frames (runs separated by at most ``gap`` quiet frames are
    merged), each with its first / last frame, start / end time and its peak score and frame."""
    alerts = np.asarray(alerts, dtype=bool)
    out: list[dict[str, Any]] = []
    start = None
    quiet = 0
    for i, alert in enumerate(alerts):
        if alert:
            if start is None:
                start = i
            quiet = 0
            last = i
        elif start is not None:
            quiet += 1
            if quiet > gap:
                out.append(_event(times, frames, scores, start, last))
                start = None
    if start is not None:
        out.append(_event(times, frames, scores, start, last))
    return out


def _event(times: np.ndarray, frames: np.ndarray, scores: np.ndarray, first: int, last: int) -> dict[str, Any]:
    window = np.asarray(scores[first : last + 1], dtype=np.float64)
    peak = first + int(np.nanargmax(window))
    return {
        "start_frame": int(frames[first]),
        "end_frame": int(frames[last]),
        "start_time": float(times[first]),
        "end_time": float(times[last]),
        "peak_score": float(scores[peak]),
        "peak_frame": int(frames[peak]),
    }


def calibrated_metrics(calibration: Calibration, result: ProtocolResult) -> dict[str, Any]:
    """The test scored as a stream would be (no per-video min-max; each video's scores smoothed causally as the
    calibration says, as ``vad.score`` smooths an input's), beside the protocol's numbers: the micro AUC of the
    calibrated scores, and the precision / recall / false-alarm rate of the alerts at the threshold of a
    :data:`DEFAULT_FPR` false-alarm rate on the calibration frames."""
    labelled = [v for v in result.videos if v.labels is not None]
    out: dict[str, Any] = {
        "source": calibration.source,
        "frames": calibration.frames,
        "smoothing": calibration.smoothing,
        "fpr": DEFAULT_FPR,
    }
    if not labelled:
        return out
    scores = np.concatenate([calibration.stream_scores(v.signals, result.weights) for v in labelled])
    labels = np.concatenate([v.labels for v in labelled]).astype(int)
    threshold = calibration.threshold(DEFAULT_FPR)
    out["threshold"] = threshold
    out["auc_micro"] = float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else None
    out |= {f"alert_{k}": v for k, v in alert_metrics(scores, labels, threshold).items()}
    return out
