"""Frame-level evaluation protocol: per-frame signals -> per-video normalisation -> fusion -> metrics.

Pure numpy, scikit-learn and torch; knows nothing about models. One polarity everywhere: a higher score is more
anomalous and label 1 is anomalous. A method emits named per-frame signals (``psnr``, ``feature_distance``, ...) and
signed weights say how they fuse: FFP ``{psnr: -1}`` (a low PSNR is anomalous), MNAD ``{psnr: -0.6,
feature_distance: 0.4}``.

    videos = group_records(records, video_order=[v.name for v in index.test])
    result = evaluate(videos, {"psnr": -1.0}, full_labels={v.name: v.labels for v in index.test})

The protocol of the literature (frame level):

1. frames a method cannot score -- absent from the records (the first t frames of each video for predictors) or
   with a non-finite weighted signal -- are dropped from scores and labels alike, and counted;
2. per video, each weighted signal is min-max normalised to [0, 1] and the signed weights fuse them into a score in
   [0, 1] (``normalisation="max"``: each is divided by its video's maximum instead, see :func:`divide_by_max`);
   With ``smoothing=sigma`` > 0, each weighted signal is first filtered along time, per video, with a Gaussian of
   standard deviation ``sigma`` frames (:func:`smooth`), as many later papers do before their AUC; 0 (default) is
   the protocol of FFP and MNAD. The results record it;
3. micro AUC on all videos concatenated (what papers call "frame-level AUC"); macro AUC, the mean of per-video AUCs
   over the videos holding both classes; EER and average precision on the concatenation; and the micro AUC of the
   fused raw signals without per-video normalisation.

The max-patch score of AMC (Nguyen & Meunier, ICCV 2019) is a per-frame signal built from per-pixel error maps:
:func:`max_patch` finds the window with the largest mean flow error S_F and reads the mean intensity error S_I in that
same window, and :func:`patch_score` combines them as ``log(w_F S_F) + lambda log(w_I S_I)``. Under min-max
normalisation the constants ``log w`` cancel; dividing these (typically negative) log scores by their video maximum,
as the paper writes it, reverses their order (see :func:`divide_by_max`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from vad.data.index import natural_key
from vad.errors import ConfigError

NORMALISED = "per-video min-max"
DIVIDED_BY_MAX = "per-video division by the max"
RAW = "none (raw signals)"
#: the per-video normalisations of :func:`fuse` and :func:`evaluate`: name -> what metrics.json records
NORMALISATIONS: dict[str, str] = {"minmax": NORMALISED, "max": DIVIDED_BY_MAX}


def _as_labels(labels: np.ndarray | Sequence[int], what: str) -> np.ndarray:
    """Validate 0/1 labels and return them as a 1-D uint8 array (integer or bool input; uint8 overflow impossible)."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{what}: labels must be 1-D, got shape {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = arr[~np.isin(arr, (0, 1))][0]
        raise ValueError(f"{what}: labels must be 0 (normal) or 1 (anomalous), found {bad!r}")
    return arr.astype(np.uint8)


@dataclass
class VideoSignals:
    """The per-frame signals a method emitted for one video.

    ``frames``: (F,) int64 frame positions (0-based) that were scored, strictly increasing. ``labels``: (F,) uint8
    0/1 for those frames, or None when the test loop did not know them (:func:`evaluate` then reads them from its
    ``full_labels``). ``signals``: name -> (F,) float64 raw values; a non-finite value marks a frame that could not
    be scored. ``num_frames``: the video's length when known, so frames absent from the records count as dropped;
    ``skipped``: the video has no predictions by design (shorter than one clip) and is left out of the evaluation.
    """

    name: str
    frames: np.ndarray
    labels: np.ndarray | None
    signals: dict[str, np.ndarray]
    num_frames: int | None = None
    skipped: bool = False

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames, dtype=np.int64)
        if self.frames.ndim != 1:
            raise ValueError(f"video {self.name!r}: frames must be 1-D, got shape {self.frames.shape}")
        steps = np.diff(self.frames)
        if (steps == 0).any():
            frame = int(self.frames[1:][steps == 0][0])
            raise ValueError(f"video {self.name!r} frame {frame} appears twice in the records; score each frame once")
        if (steps < 0).any():
            raise ValueError(f"video {self.name!r}: frames must be increasing; build it with group_records")
        if self.labels is not None:
            self.labels = _as_labels(self.labels, f"video {self.name!r}")
            if len(self.labels) != len(self.frames):
                raise ValueError(f"video {self.name!r}: {len(self.labels)} labels for {len(self.frames)} frames")
        self.signals = {str(k): np.asarray(v, dtype=np.float64) for k, v in self.signals.items()}
        for key, values in self.signals.items():
            if values.shape != self.frames.shape:
                raise ValueError(
                    f"video {self.name!r}: signal {key!r} has shape {values.shape}, frames {self.frames.shape}"
                )
        if (
            self.num_frames is not None
            and self.frames.size
            and not 0 <= self.frames[0] <= self.frames[-1] < self.num_frames
        ):
            raise ValueError(
                f"video {self.name!r}: scored frames span {self.frames[0]}..{self.frames[-1]} but the video has "
                f"{self.num_frames} frames; the records and the dataset describe different videos"
            )


@dataclass(frozen=True)
class FrameRecord:
    """One scored frame as a test loop produces it: ``signals`` maps signal name -> raw value."""

    video: str
    frame: int
    signals: Mapping[str, float]
    label: int | None = None


def _video_ranks(names: Sequence[str], video_order: Sequence[str] | None) -> tuple[list[str], np.ndarray]:
    """The videos in order (``video_order``, or natural order of the names) and each row's rank in it."""
    present = set(names)
    if video_order is None:
        order = sorted(present, key=natural_key)
    else:
        order = [v for v in video_order if v in present]
        unknown = present.difference(video_order)
        if unknown:
            raise ValueError(f"records name videos missing from video_order: {sorted(unknown, key=natural_key)}")
    rank = {name: i for i, name in enumerate(order)}
    return order, np.fromiter((rank[n] for n in names), dtype=np.int64, count=len(names))


def group_columns(
    videos: Sequence[str],
    frames: np.ndarray | Sequence[int],
    signals: Mapping[str, np.ndarray | Sequence[float]],
    labels: np.ndarray | Sequence[int] | None = None,
    video_order: Sequence[str] | None = None,
) -> list[VideoSignals]:
    """Group flat per-frame columns (as a test loop accumulates them, in any order) into per-video signals.

    ``videos``: (N,) video name of each row; ``frames``: (N,) frame positions; ``signals``: name -> (N,) values;
    ``labels``: (N,) 0/1 or None. Videos come out in ``video_order`` (default: natural order of the names), frames
    sorted; a (video, frame) pair given twice raises ValueError naming it.
    """
    names = [str(v) for v in videos]
    frame_col = np.asarray(frames, dtype=np.int64)
    columns = {str(k): np.asarray(v, dtype=np.float64) for k, v in signals.items()}
    label_col = None if labels is None else _as_labels(labels, "records")
    for what, col in [("frames", frame_col), *columns.items(), ("labels", label_col)]:
        if col is not None and col.shape != (len(names),):
            raise ValueError(f"records: column {what!r} has shape {col.shape}, expected ({len(names)},)")
    order, ranks = _video_ranks(names, video_order)
    rows = np.lexsort((frame_col, ranks))
    starts = np.searchsorted(ranks[rows], np.arange(len(order) + 1))
    grouped = []
    for i, name in enumerate(order):
        sel = rows[starts[i] : starts[i + 1]]
        grouped.append(
            VideoSignals(
                name=name,
                frames=frame_col[sel],
                labels=None if label_col is None else label_col[sel],
                signals={k: col[sel] for k, col in columns.items()},
            )
        )
    return grouped


def group_records(records: Iterable[FrameRecord], video_order: Sequence[str] | None = None) -> list[VideoSignals]:
    """Group :class:`FrameRecord` rows (any order) into per-video signals; see :func:`group_columns`.

    Every record must carry the same signal names, and either all records carry a label or none does.
    """
    records = list(records)
    keys = list(records[0].signals) if records else []
    has_label = bool(records) and records[0].label is not None
    for r in records:
        if set(r.signals) != set(keys):
            raise ValueError(f"record ({r.video!r}, {r.frame}) has signals {sorted(r.signals)}, expected {keys}")
        if (r.label is not None) != has_label:
            raise ValueError(f"record ({r.video!r}, {r.frame}): either every record carries a label or none does")
    return group_columns(
        videos=[r.video for r in records],
        frames=[r.frame for r in records],
        signals={k: [r.signals[k] for r in records] for k in keys},
        labels=[r.label for r in records] if has_label else None,
        video_order=video_order,
    )


class EvalVideo(Protocol):
    """What :func:`videos_from_records` needs to know about a test video (e.g. the datamodule's ``VideoInfo``):
    ``labels`` (num_frames,) 0/1 or None; ``skipped`` when it has no predictions by design."""

    @property
    def name(self) -> str: ...
    @property
    def num_frames(self) -> int: ...
    @property
    def labels(self) -> np.ndarray | None: ...
    @property
    def skipped(self) -> bool: ...


def videos_from_records(
    records: Mapping[str, np.ndarray], videos: Sequence[EvalVideo], signals: Sequence[str] | None = None
) -> list[VideoSignals]:
    """Per-video signals of every test video from a test loop's columns, labels taken from the videos.

    ``records``: ``video_id`` (N,) positions in ``videos``, ``index`` (N,) frame positions, and one (N,) column per
    signal (``signals``; default every other column), rows in any order. Every video of ``videos`` comes out, in
    that order, with its ``num_frames`` and ``skipped`` flag; a video without records has no frames.
    """
    ids = np.asarray(records["video_id"], dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= len(videos)):
        raise ValueError(f"records: video_id {ids.min()}..{ids.max()} outside the {len(videos)} test videos")
    names = [v.name for v in videos]
    keys = list(signals) if signals is not None else [k for k in records if k not in ("video_id", "index")]
    grouped = {
        g.name: g
        for g in group_columns(
            [names[i] for i in ids], records["index"], {k: records[k] for k in keys}, video_order=names
        )
    }
    out = []
    for v in videos:
        g = grouped.get(v.name) or VideoSignals(v.name, np.empty(0, np.int64), None, {k: np.empty(0) for k in keys})
        labels = None
        if v.labels is not None:
            if g.frames.size and g.frames[-1] >= len(v.labels):
                raise ValueError(f"video {v.name!r}: frame {g.frames[-1]} scored but only {len(v.labels)} labels")
            labels = np.asarray(v.labels)[g.frames]
        out.append(VideoSignals(v.name, g.frames, labels, g.signals, num_frames=v.num_frames, skipped=v.skipped))
    return out


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


def _both_classes(labels: np.ndarray) -> bool:
    return labels.size > 0 and 0 < int(labels.sum()) < labels.size


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The rate where the false-positive rate equals the miss rate 1 - TPR, linearly interpolated along the ROC.

    ``fpr``, ``tpr``: an ROC curve from (0, 0) to (1, 1) in increasing order (sklearn ``roc_curve``).
    """
    gap = (1.0 - tpr) - fpr  # decreases from 1 at (0, 0) to -1 at (1, 1)
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0 or i == 0:
        return float(fpr[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


@dataclass
class ScoredVideo:
    """One evaluated video after dropping: ``frames`` (F,) int64, ``labels`` (F,) uint8 or None, ``score`` (F,)
    float64 fused anomaly score, ``signals`` name -> (F,) raw values, ``auc`` its own AUC (None if single-class or
    unlabelled)."""

    name: str
    frames: np.ndarray
    labels: np.ndarray | None
    score: np.ndarray
    signals: dict[str, np.ndarray]
    auc: float | None


@dataclass
class ProtocolResult:
    """The outcome of :func:`evaluate`; metrics are NaN where undefined (single class overall, or no labels).

    ``auc_micro``: ROC AUC of the concatenated fused scores; ``auc_macro``: mean per-video AUC over videos with both
    classes (``single_class_videos`` lists the others); ``eer``, ``ap``: on the concatenation; ``auc_micro_raw``:
    micro AUC of the fused raw signals without per-video normalisation. ``roc_fpr``/``roc_tpr``/``roc_thresholds``:
    the micro ROC curve. Frames dropped: ``dropped_nonfinite`` (a weighted signal was NaN/inf), ``dropped_missing``
    (frames of ``full_labels`` absent from the records, including whole ``missing_videos``). ``normalisation``: the
    per-video normalisation of the fused score when ``normalise`` (``"minmax"`` or ``"max"``, see :func:`fuse`);
    ``smoothing``: the temporal Gaussian's sigma in frames applied to every weighted signal first (0: none).
    """

    weights: dict[str, float]
    normalise: bool
    label_source: str | None
    signal_names: list[str]
    videos: list[ScoredVideo]
    auc_micro: float
    auc_macro: float
    eer: float
    ap: float
    auc_micro_raw: float
    single_class_videos: list[str]
    skipped_videos: list[str]
    missing_videos: list[str]
    dropped_nonfinite: int
    dropped_missing: int
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray
    roc_thresholds: np.ndarray
    normalisation: str = "minmax"
    smoothing: float = 0.0

    @property
    def normalisation_description(self) -> str:
        """How the fused score was normalised, as metrics.json records it (``"per-video min-max"``, ...; with
        smoothing: ``"... after a temporal Gaussian (sigma 4 frames)"``)."""
        text = NORMALISATIONS[self.normalisation] if self.normalise else RAW
        return f"{text} after a temporal Gaussian (sigma {self.smoothing:g} frames)" if self.smoothing else text

    @property
    def labelled(self) -> bool:
        return bool(self.videos) and self.videos[0].labels is not None

    @property
    def per_video(self) -> dict[str, float | None]:
        return {v.name: v.auc for v in self.videos}

    @property
    def n_frames(self) -> int:
        return sum(len(v.frames) for v in self.videos)

    @property
    def n_anomalous(self) -> int:
        return sum(int(v.labels.sum()) for v in self.videos if v.labels is not None)

    @property
    def n_dropped(self) -> int:
        return self.dropped_nonfinite + self.dropped_missing

    @property
    def n_macro_videos(self) -> int:
        return sum(v.auc is not None for v in self.videos)

    def to_dict(self) -> dict[str, object]:
        """Metrics, counts and protocol as JSON-ready values (NaN -> None); per-frame data lives in scores.csv."""

        def num(x: float) -> float | None:
            return None if x is None or not math.isfinite(x) else float(x)

        return {
            "auc_micro": num(self.auc_micro),
            "auc_macro": num(self.auc_macro),
            "eer": num(self.eer),
            "ap": num(self.ap),
            "auc_micro_raw": num(self.auc_micro_raw),
            "per_video_auc": {k: num(v) for k, v in self.per_video.items()},
            "single_class_videos": list(self.single_class_videos),
            "frames": self.n_frames,
            "anomalous": self.n_anomalous if self.labelled else None,
            "dropped": self.n_dropped,
            "dropped_nonfinite": self.dropped_nonfinite,
            "dropped_missing": self.dropped_missing,
            "videos": len(self.videos),
            "skipped_videos": list(self.skipped_videos),
            "missing_videos": list(self.missing_videos),
            "weights": dict(self.weights),
            "normalisation": self.normalisation_description,
            "smoothing": self.smoothing,
            "signals": list(self.signal_names),
            "label_source": self.label_source,
        }


def _video_length(video: VideoSignals, full: np.ndarray | None) -> int | None:
    """The video's frame count from its full labels or its ``num_frames``; None when neither is known."""
    if full is not None and video.num_frames is not None and len(full) != video.num_frames:
        raise ValueError(
            f"video {video.name!r}: {len(full)} full labels for a video of {video.num_frames} frames; "
            "the label source does not match the frames"
        )
    return len(full) if full is not None else video.num_frames


def _resolve_labels(video: VideoSignals, full: np.ndarray | None) -> np.ndarray | None:
    """The labels of the scored frames: from the records, else from the full per-video labels; both must agree."""
    if full is None:
        return video.labels
    if video.frames.size and (video.frames[0] < 0 or video.frames[-1] >= len(full)):
        raise ValueError(
            f"video {video.name!r}: scored frames span {video.frames[0]}..{video.frames[-1]} but its labels cover "
            f"{len(full)} frames; the records and the label source describe different videos"
        )
    from_full = full[video.frames]
    if video.labels is not None and not np.array_equal(video.labels, from_full):
        frame = int(video.frames[np.argmax(video.labels != from_full)])
        raise ValueError(
            f"video {video.name!r} frame {frame}: the record's label differs from full_labels (shifted labels?)"
        )
    return from_full


def _micro(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, float, np.ndarray, np.ndarray, np.ndarray]:
    """Micro AUC, EER, AP and the ROC curve of concatenated scores; NaN (with a warning) for a single class."""
    if not _both_classes(labels):
        n_pos = int(labels.sum())
        warnings.warn(
            f"the evaluated labels hold a single class ({labels.size} frames, {n_pos} anomalous): micro AUC, EER and "
            "AP are undefined (NaN)",
            RuntimeWarning,
            stacklevel=3,
        )
        empty = np.empty(0)
        return math.nan, math.nan, math.nan, empty, empty, empty
    fpr, tpr, thresholds = roc_curve(labels, scores)
    auc = float(roc_auc_score(labels, scores))
    return auc, equal_error_rate(fpr, tpr), float(average_precision_score(labels, scores)), fpr, tpr, thresholds


def evaluate(
    videos: Sequence[VideoSignals],
    weights: Mapping[str, float],
    *,
    normalise: bool = True,
    normalisation: str = "minmax",
    smoothing: float = 0.0,
    full_labels: Mapping[str, np.ndarray] | None = None,
    skip_videos: Iterable[str] = (),
    label_source: str | None = None,
) -> ProtocolResult:
    """Run the frame-level protocol on per-video signals fused with signed ``weights``.

    ``full_labels``: video name -> (num_frames,) 0/1 labels of every frame of the video (e.g. ``Video.labels``);
    gives the labels where the records have none, and counts frames absent from the records as dropped (as a
    video's ``num_frames`` does; a video without any scored frame is listed in ``missing_videos``).
    ``skip_videos``: names excluded entirely, as are videos flagged ``skipped``. ``normalise=False`` makes the raw
    fusion the primary score. ``normalisation``: ``"minmax"`` (default) or ``"max"`` (each weighted signal divided
    by its video's maximum, see :func:`fuse`); any other value raises ConfigError. ``smoothing``: sigma in frames of
    the temporal Gaussian applied to each weighted signal of a video's kept frames before anything else (raw fusion
    included; 0: none, the default).
    Unlabelled input (no labels anywhere) yields scores with NaN metrics.
    """
    names = [v.name for v in videos]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"videos {repeated} appear more than once; group all records of a video together")
    signal_names = list(videos[0].signals) if videos else []
    for v in videos:
        if set(v.signals) != set(signal_names):
            raise ValueError(f"video {v.name!r} has signals {sorted(v.signals)}, video {names[0]!r} {signal_names}")
    w = check_weights(weights, signal_names)
    check_normalisation(normalisation)
    smoothing = check_smoothing(smoothing)
    full = {k: _as_labels(v, f"full_labels[{k!r}]") for k, v in (full_labels or {}).items()}
    known = names + [k for k in full if k not in names]
    skipped = set(skip_videos)
    if skipped - set(known):
        raise ValueError(f"skip_videos names unknown videos {sorted(skipped - set(known))}; known: {known}")
    skipped |= {v.name for v in videos if v.skipped}

    scored: list[ScoredVideo] = []
    raw_parts: list[np.ndarray] = []
    missing: list[str] = []
    dropped_nonfinite = dropped_missing = 0
    for v in videos:
        if v.name in skipped:
            continue
        length = _video_length(v, full.get(v.name))
        dropped_missing += 0 if length is None else length - len(v.frames)
        if not len(v.frames):
            missing.append(v.name)
            continue
        labels = _resolve_labels(v, full.get(v.name))
        keep = np.logical_and.reduce([np.isfinite(v.signals[k]) for k in w])
        dropped_nonfinite += int((~keep).sum())
        kept = {k: s[keep] for k, s in v.signals.items()}
        kept_labels = None if labels is None else labels[keep]
        score = fuse(kept, w, normalise=normalise, normalisation=normalisation, smoothing=smoothing)
        raw_parts.append(fuse(kept, w, normalise=False, smoothing=smoothing))
        auc = None
        if kept_labels is not None and _both_classes(kept_labels):
            auc = float(roc_auc_score(kept_labels, score))
        scored.append(ScoredVideo(v.name, v.frames[keep], kept_labels, score, kept, auc))

    unlabelled = [s.name for s in scored if s.labels is None]
    if unlabelled and len(unlabelled) < len(scored):
        raise ValueError(f"videos {unlabelled} have no labels while others do: pass full_labels covering them")
    unrecorded = sorted((k for k in full if k not in names and k not in skipped), key=natural_key)
    missing += unrecorded
    dropped_missing += sum(len(full[k]) for k in unrecorded)

    empty = np.empty(0)
    auc_micro = auc_macro = eer = ap = auc_raw = math.nan
    fpr = tpr = thresholds = empty
    single_class = [s.name for s in scored if s.labels is not None and s.auc is None]
    if scored and not unlabelled:
        labels_all = np.concatenate([s.labels for s in scored])
        auc_micro, eer, ap, fpr, tpr, thresholds = _micro(np.concatenate([s.score for s in scored]), labels_all)
        if _both_classes(labels_all):
            auc_raw = float(roc_auc_score(labels_all, np.concatenate(raw_parts)))
        per_video = [s.auc for s in scored if s.auc is not None]
        if per_video:
            auc_macro = float(np.mean(per_video))
        else:
            warnings.warn(
                "no evaluated video holds both classes: macro AUC is undefined (NaN)", RuntimeWarning, stacklevel=2
            )

    return ProtocolResult(
        weights=w,
        normalise=normalise,
        label_source=label_source,
        signal_names=signal_names,
        videos=scored,
        auc_micro=auc_micro,
        auc_macro=auc_macro,
        eer=eer,
        ap=ap,
        auc_micro_raw=auc_raw,
        single_class_videos=single_class,
        skipped_videos=[n for n in known if n in skipped],
        missing_videos=missing,
        dropped_nonfinite=dropped_nonfinite,
        dropped_missing=dropped_missing,
        roc_fpr=fpr,
        roc_tpr=tpr,
        roc_thresholds=thresholds,
        normalisation=normalisation,
        smoothing=smoothing,
    )


def _spatial(error_map: torch.Tensor, what: str) -> torch.Tensor:
    """An (N, H, W) or (N, C, H, W) map as (N, H, W) float32, channels averaged."""
    if not isinstance(error_map, torch.Tensor):
        raise TypeError(f"{what} must be a torch tensor, got {type(error_map).__name__}")
    if error_map.ndim == 4:
        error_map = error_map.float().mean(dim=1)
    elif error_map.ndim != 3:
        raise ValueError(f"{what} must be (N, H, W) or (N, C, H, W), got shape {tuple(error_map.shape)}")
    return error_map.float()


#: the keys of a method's ``model.patch`` and their types: window and stride in pixels, lam (lambda_S) a weight
PATCH_KEYS: Mapping[str, type] = {"window": int, "stride": int, "lam": float}


def check_patch(patch: Mapping[str, object] | None, defaults: Mapping[str, object]) -> dict[str, object]:
    """A method's ``model.patch`` (the max-patch settings it takes: the keys of ``defaults``) with the defaults filled
    in; ConfigError for an unknown key, a window / stride that is not a positive integer or a non-numeric lam."""
    given = dict(patch or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"model.patch has unknown key(s) {unknown}; valid: {list(defaults)}")
    parsed = dict(defaults) | given
    for key, value in parsed.items():
        if PATCH_KEYS[key] is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"model.patch.{key} must be a positive integer (pixels), got {value!r}")
        if PATCH_KEYS[key] is float:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"model.patch.{key} must be a finite number, got {value!r}")
            parsed[key] = float(value)
    return parsed


def window_means(error_map: torch.Tensor, window: int = 16, stride: int = 4) -> torch.Tensor:
    """The mean of each ``window`` x ``window`` patch of a per-pixel map, patches every ``stride`` pixels.

    ``error_map``: (N, H, W) or (N, C, H, W) (the channels are averaged first) -> (N, nh, nw) float32 with
    ``nh = (H - window) // stride + 1`` (same for the width): no padding, the top-left patch starts at pixel (0, 0)
    and a patch that would cross the bottom or right border is not taken. Raises ValueError when the window is larger
    than the map, or for a window or stride below 1.
    """
    maps = _spatial(error_map, "error_map")
    for name, size in (("window", window), ("stride", stride)):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{name} must be a positive integer, got {size!r}")
    height, width = maps.shape[-2:]
    if window > height or window > width:
        raise ValueError(f"a {window}x{window} window does not fit in an error map of {height}x{width} pixels")
    return F.avg_pool2d(maps[:, None], kernel_size=window, stride=stride)[:, 0]


class MaxPatch(NamedTuple):
    """The selected window of each frame (see :func:`max_patch`): ``select`` (N,) its mean of the selecting map,
    ``value`` (N,) its mean of the value map, ``corner`` (N, 2) int64 (y, x) of its top-left pixel."""

    select: torch.Tensor
    value: torch.Tensor
    corner: torch.Tensor


def max_patch(
    select_map: torch.Tensor, value_map: torch.Tensor | None = None, window: int = 16, stride: int = 4
) -> MaxPatch:
    """Per frame, the window with the largest mean of ``select_map`` and the mean of ``value_map`` in that window.

    ``select_map``, ``value_map``: (N, H, W) or (N, C, H, W) per-pixel maps, channels averaged, with the same N, H and
    W (AMC: the flow error selects, the intensity error is read in the selected window); ``value_map`` None reads
    ``select_map`` itself (``value == select``). Windows as in :func:`window_means`. Among windows with the same mean
    the first in row-major order (smallest y, then smallest x) wins, so a constant map selects corner (0, 0); a NaN
    mean counts as the largest (the frame's score is then NaN, dropped by :func:`evaluate`). Results are float32
    (``corner`` int64) on the maps' device, with or without ``torch.no_grad`` (``select`` and ``value`` carry the
    maps' gradient when there is one).
    """
    selecting = _spatial(select_map, "select_map")
    values = None if value_map is None else _spatial(value_map, "value_map")
    if values is not None and values.shape != selecting.shape:
        raise ValueError(
            f"value_map is {tuple(values.shape)} after averaging channels, select_map {tuple(selecting.shape)}: "
            "the maps must cover the same frames and pixels"
        )
    means = window_means(selecting, window, stride)
    cols = means.shape[-1]
    flat = means.flatten(1)
    best = flat.argmax(dim=1)[:, None]  # the first maximal index in row-major order
    select = flat.gather(1, best)[:, 0]
    value = select if values is None else window_means(values, window, stride).flatten(1).gather(1, best)[:, 0]
    corner = torch.cat([best // cols, best % cols], dim=1).to(torch.int64) * stride
    return MaxPatch(select, value, corner)


def patch_score(
    flow_error: torch.Tensor | np.ndarray | float,
    intensity_error: torch.Tensor | np.ndarray | float,
    w_flow: float = 1.0,
    w_intensity: float = 1.0,
    lam: float = 0.2,
    eps: float = 1e-8,
) -> torch.Tensor | np.ndarray:
    """AMC's frame score ``log(w_F max(S_F, eps)) + lam log(w_I max(S_I, eps))`` (higher = more anomalous).

    ``flow_error`` S_F and ``intensity_error`` S_I: per-frame errors (e.g. :func:`max_patch`'s ``select`` and
    ``value`` of the flow and intensity error maps); ``w_flow``, ``w_intensity``: the paper's inverse mean errors over
    the training frames; ``lam``: lambda_S (0.2 in the paper). The errors are clamped at ``eps`` before the log so
    that a zero error (a perfect prediction) gives the finite score ``log(w_F eps) + lam log(w_I eps)``, i.e.
    ``(1 + lam) log(eps)`` for unit weights, instead of -inf (a NaN error stays NaN). Torch tensors in (either one
    a tensor: a tensor on its device, in at least float32 so that ``eps`` does not underflow) or numpy arrays /
    floats in (float64 numpy) -> the same kind out. Under min-max normalisation the constants ``log w_F + lam log
    w_I`` cancel; under division by the video max they do not (see :func:`divide_by_max`). Raises ValueError for a
    weight or ``eps`` that is not > 0.
    """
    for name, value in (("w_flow", w_flow), ("w_intensity", w_intensity), ("eps", eps)):
        if not value > 0:
            raise ValueError(f"patch_score: {name} must be > 0, got {value}")
    if isinstance(flow_error, torch.Tensor) or isinstance(intensity_error, torch.Tensor):
        like = flow_error if isinstance(flow_error, torch.Tensor) else intensity_error
        dtype = torch.promote_types(like.dtype, torch.float32) if like.is_floating_point() else torch.float32
        flow = torch.as_tensor(flow_error, device=like.device).to(dtype)
        intensity = torch.as_tensor(intensity_error, device=like.device).to(dtype)
        return torch.log(w_flow * flow.clamp_min(eps)) + lam * torch.log(w_intensity * intensity.clamp_min(eps))
    flow = np.asarray(flow_error, dtype=np.float64)
    intensity = np.asarray(intensity_error, dtype=np.float64)
    return np.log(w_flow * np.maximum(flow, eps)) + lam * np.log(w_intensity * np.maximum(intensity, eps))
