"""Frame-level evaluation protocol: per-frame signals -> per-video normalisation -> fusion -> metrics.

Pure numpy and scikit-learn; knows nothing about models. One polarity everywhere: a higher score is more
anomalous and label 1 is anomalous. A method emits named per-frame signals (``psnr``, ``feature_distance``, ...) and
signed weights say how they fuse: FFP ``{psnr: -1}`` (a low PSNR is anomalous), MNAD ``{psnr: -0.6,
feature_distance: 0.4}``.

    videos = group_records(records, video_order=[v.name for v in index.test])   # vad.evaluation.records
    result = evaluate(videos, {"psnr": -1.0}, full_labels={v.name: v.labels for v in index.test})

The protocol of the literature (frame level):

1. frames a method cannot score -- absent from the records (the first t frames of each video for predictors) or
   with a non-finite weighted signal -- are dropped from scores and labels alike, and counted;
2. per video, each weighted signal is min-max normalised to [0, 1] and the signed weights fuse them into a score in
   [0, 1] (``normalisation="max"``: each is divided by its video's maximum instead, see
   :func:`vad.evaluation.fusion.divide_by_max`); with ``smoothing=sigma`` > 0, each weighted signal is first
   filtered along time, per video, with a Gaussian of standard deviation ``sigma`` frames
   (:func:`vad.evaluation.smoothing.smooth`), as many later papers do before their AUC; 0 (default) is the protocol
   of FFP and MNAD. The results record it;
3. micro AUC on all videos concatenated (what papers call "frame-level AUC"); macro AUC, the mean of per-video AUCs
   over the videos holding both classes; EER and average precision on the concatenation; and the micro AUC of the
   fused raw signals without per-video normalisation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from vad.data.index import natural_key
from vad.evaluation.fusion import NORMALISATIONS, RAW, check_normalisation, check_weights, fuse
from vad.evaluation.records import VideoSignals, as_labels
from vad.evaluation.smoothing import check_smoothing


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
    full = {k: as_labels(v, f"full_labels[{k!r}]") for k, v in (full_labels or {}).items()}
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
