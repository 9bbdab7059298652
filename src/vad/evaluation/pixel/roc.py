"""Pixel-level ROC of anomaly maps against masks: the pixel AUC and the UCSD 40 % frame criterion.

Pure numpy; maps and masks as :mod:`vad.evaluation.pixel.masks` describes them (one video as two (N, H, W) arrays,
or a sequence of each; maps at the masks' size).

    pixel_auc(maps, masks)                                              # all pixels of all frames
    ucsd_pixel_level(maps, masks).auc                                   # the classic UCSD "pixel-level" AUC

**Pixel AUC** (:func:`pixel_auc`, streaming :class:`PixelROC`): the ROC AUC of every pixel of every frame, anomaly
map value against mask, ties counted half (Mann-Whitney). This is the pixel-wise AUROC of image anomaly segmentation
(MVTec AD, Bergmann et al., CVPR 2019 / IJCV 2021). ``anomalous_frames_only=True`` pools only the pixels of frames
whose mask holds an anomaly, so that the background of the (many) normal frames does not dominate; which video
papers report which of the two must be read off each paper -- in video papers "pixel-level AUC" most often means the
UCSD criterion below, not either of these. Exact by default; ``bins`` trades exactness for bounded memory (values
falling into one bin count as ties).

**UCSD pixel-level criterion** (:func:`ucsd_pixel_level`; Mahadevan, Li, Bhalodia & Vasconcelos, CVPR 2010; Li,
Mahadevan & Vasconcelos, TPAMI 2014): a frame-level ROC in which a frame holding an anomaly is a true detection at
threshold ``t`` when at least 40 % of its anomalous pixels are detected, and a normal frame is a false positive when
any of its pixels is detected. So an anomalous frame's score is the ``ceil(0.4 n)``-th largest map value over its
``n`` anomalous pixels and a normal frame's score is its map's maximum; the ROC of these per-frame scores is the
criterion's ROC at every threshold at once. An anomalous frame below 40 % is a miss, not a false positive, and
detections elsewhere in an anomalous frame are not penalised (the flaw the Street Scene paper points out). UCSD Ped1
has pixel masks for only some of its test videos: this criterion, like every metric here, runs on the videos given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vad.evaluation.pixel.masks import ArrayOrVideos, as_videos, check_video, exact_ratio, undefined_metric
from vad.evaluation.protocol import equal_error_rate


@dataclass(frozen=True)
class Roc:
    """An ROC curve: ``thresholds`` decreasing (the first is +inf: nothing detected), ``fpr`` and ``tpr`` from
    (0, 0) to (1, 1); ``auc`` its area (ties between classes count half); ``eer`` the equal error rate."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float
    eer: float
    n_positive: int
    n_negative: int


def _roc_from_counts(levels: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> Roc:
    """ROC of items grouped by score level: ``levels`` increasing, counts of positives and negatives per level."""
    n_pos, n_neg = int(positive.sum()), int(negative.sum())
    if n_pos == 0 or n_neg == 0:
        nan = undefined_metric(f"{n_pos} positives and {n_neg} negatives")
        empty = np.empty(0)
        return Roc(empty, empty, empty, nan, nan, n_pos, n_neg)
    tp = np.concatenate([[0], np.cumsum(positive[::-1], dtype=np.float64)])
    fp = np.concatenate([[0], np.cumsum(negative[::-1], dtype=np.float64)])
    tpr, fpr = tp / n_pos, fp / n_neg
    thresholds = np.concatenate([[np.inf], np.asarray(levels, dtype=np.float64)[::-1]])
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)
    return Roc(fpr, tpr, thresholds, auc, equal_error_rate(fpr, tpr), n_pos, n_neg)


def _level_counts(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique values (increasing) and the number of positive / negative items at each."""
    levels, inverse = np.unique(values, return_inverse=True)
    inverse = inverse.reshape(-1)
    labels = labels.reshape(-1)
    positive = np.bincount(inverse[labels], minlength=levels.size).astype(np.int64)
    negative = np.bincount(inverse[~labels], minlength=levels.size).astype(np.int64)
    return levels, positive, negative


class PixelROC:
    """Streaming pixel-level ROC: feed videos (or chunks of frames) with :meth:`update`, read :meth:`roc`.

    ``bins=None`` (exact): keeps every distinct map value with its anomalous / normal pixel counts -- exact, but its
    memory grows with the number of distinct values (float maps of a whole dataset: use bins). ``bins=B`` with
    ``value_range=(lo, hi)``: B equal bins over [lo, hi] (values outside go to the end bins); pixels in one bin are
    ties, so the AUC is off by at most half the share of anomalous-normal pairs sharing a bin. Memory is O(B).
    ``anomalous_frames_only``: count only frames whose mask holds an anomalous pixel.
    """

    def __init__(
        self,
        bins: int | None = None,
        value_range: tuple[float, float] | None = None,
        anomalous_frames_only: bool = False,
    ) -> None:
        self.anomalous_frames_only = anomalous_frames_only
        self.bins = bins
        if bins is not None:
            if int(bins) < 1:
                raise ValueError(f"bins must be a positive integer, got {bins}")
            if value_range is None:
                raise ValueError("bins need a fixed value_range=(lo, hi) (pixel_auc finds it from the maps)")
            lo, hi = float(value_range[0]), float(value_range[1])
            if not (math.isfinite(lo) and math.isfinite(hi) and hi >= lo):
                raise ValueError(f"value_range must be finite with lo <= hi, got {value_range}")
            self.bins = int(bins)
            self.value_range = (lo, hi)
            self._positive = np.zeros(self.bins, dtype=np.int64)
            self._negative = np.zeros(self.bins, dtype=np.int64)
            self._levels = lo + (hi - lo) * np.arange(self.bins) / self.bins  # lower bin edges
        else:
            self.value_range = None
            self._levels = np.empty(0)
            self._positive = np.empty(0, dtype=np.int64)
            self._negative = np.empty(0, dtype=np.int64)

    def update(self, maps: np.ndarray, masks: np.ndarray) -> None:
        """Add frames: ``maps`` (N, H, W) numeric, ``masks`` (N, H, W) bool of the same shape."""
        maps, masks = check_video(maps, masks)
        if self.anomalous_frames_only:
            keep = masks.reshape(len(masks), -1).any(axis=1)
            maps, masks = maps[keep], masks[keep]
        if maps.size == 0:
            return
        if self.bins is not None:
            self._update_binned(maps, masks)
            return
        levels, positive, negative = _level_counts(maps, masks)
        merged, inverse = np.unique(np.concatenate([self._levels, levels]), return_inverse=True)
        counts_pos = np.concatenate([self._positive, positive])
        counts_neg = np.concatenate([self._negative, negative])
        self._positive = np.bincount(inverse, weights=counts_pos, minlength=merged.size).astype(np.int64)
        self._negative = np.bincount(inverse, weights=counts_neg, minlength=merged.size).astype(np.int64)
        self._levels = merged

    def _update_binned(self, maps: np.ndarray, masks: np.ndarray, chunk: int = 64) -> None:
        lo, hi = self.value_range  # type: ignore[misc]
        scale = self.bins / (hi - lo) if hi > lo else 0.0
        for start in range(0, len(maps), chunk):
            values = maps[start : start + chunk].astype(np.float64).reshape(-1)
            labels = masks[start : start + chunk].reshape(-1)
            index = np.clip(np.floor((values - lo) * scale), 0, self.bins - 1).astype(np.int64)  # type: ignore[operator]
            self._positive += np.bincount(index[labels], minlength=self.bins)
            self._negative += np.bincount(index[~labels], minlength=self.bins)

    @property
    def n_positive(self) -> int:
        return int(self._positive.sum())

    @property
    def n_negative(self) -> int:
        return int(self._negative.sum())

    def merge(self, other: PixelROC) -> None:
        """Add the counts of ``other`` (e.g. another process's share of the frames), which must be set up alike
        (same bins and value range, same ``anomalous_frames_only``)."""
        same = (other.bins, other.value_range, other.anomalous_frames_only) == (
            self.bins,
            self.value_range,
            self.anomalous_frames_only,
        )
        if not same:
            raise ValueError("merge: the two PixelROCs differ in bins, value_range or anomalous_frames_only")
        if self.bins is not None:
            self._positive = self._positive + other._positive
            self._negative = self._negative + other._negative
            return
        merged, inverse = np.unique(np.concatenate([self._levels, other._levels]), return_inverse=True)
        counts_pos = np.concatenate([self._positive, other._positive])
        counts_neg = np.concatenate([self._negative, other._negative])
        self._positive = np.bincount(inverse, weights=counts_pos, minlength=merged.size).astype(np.int64)
        self._negative = np.bincount(inverse, weights=counts_neg, minlength=merged.size).astype(np.int64)
        self._levels = merged

    @property
    def bin_error_bound(self) -> float:
        """How far the binned AUC can be from the exact one: half the share of anomalous-normal pixel pairs that
        share a bin (each such pair counts 1/2 here, 0 or 1 exactly); 0 when exact (``bins=None``), NaN while a class
        is missing."""
        if self.n_positive == 0 or self.n_negative == 0:
            return math.nan
        if self.bins is None:
            return 0.0
        shared = float(np.dot(self._positive.astype(np.float64), self._negative.astype(np.float64)))
        return 0.5 * shared / (float(self.n_positive) * float(self.n_negative))

    def roc(self) -> Roc:
        """The ROC so far; AUC and EER are NaN (with a RuntimeWarning) while a class is missing."""
        return _roc_from_counts(self._levels, self._positive, self._negative)

    def auc(self) -> float:
        return self.roc().auc


def pixel_auc(
    maps: ArrayOrVideos,
    masks: ArrayOrVideos,
    *,
    anomalous_frames_only: bool = False,
    bins: int | None = None,
    value_range: tuple[float, float] | None = None,
) -> float:
    """ROC AUC over all pixels of all frames: each pixel's map value against its mask (see the module docstring).

    ``maps``, ``masks``: one video as two (N, H, W) arrays or sequences of per-video arrays, maps at the masks' size.
    ``anomalous_frames_only``: pool only the frames holding an anomaly. ``bins`` / ``value_range``: see
    :class:`PixelROC` (the range defaults to the maps' minimum and maximum). NaN with a warning for a single class.
    """
    videos = as_videos(maps, masks)
    if bins is not None and value_range is None:
        finite = [m for m, _ in videos if m.size]
        lo = min((float(m.min()) for m in finite), default=0.0)
        hi = max((float(m.max()) for m in finite), default=0.0)
        value_range = (lo, hi)
    accumulator = PixelROC(bins=bins, value_range=value_range, anomalous_frames_only=anomalous_frames_only)
    for m, g in videos:
        accumulator.update(m, g)
    return accumulator.auc()


@dataclass(frozen=True)
class FrameCriterion:
    """The UCSD pixel-level criterion as a frame-level ROC: per frame ``scores`` (the highest threshold at which the
    frame counts as detected) and ``labels`` (1 = the mask holds an anomaly), and their :class:`Roc`."""

    scores: np.ndarray
    labels: np.ndarray
    roc: Roc

    @property
    def auc(self) -> float:
        return self.roc.auc

    @property
    def eer(self) -> float:
        return self.roc.eer


def ucsd_frame_scores(maps: np.ndarray, masks: np.ndarray, coverage: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame scores and labels of the UCSD criterion for one video (N, H, W).

    A frame with ``n`` anomalous pixels is detected at threshold t iff at least ``ceil(coverage n)`` of them are
    ``>= t``, i.e. iff t <= the ``ceil(coverage n)``-th largest map value over them: that value is its score. A
    normal frame is a false positive iff any pixel is ``>= t``: its score is the map's maximum.
    """
    maps, masks = check_video(maps, masks)
    share = exact_ratio(coverage, "coverage")
    scores = np.empty(len(maps), dtype=np.float64)
    labels = masks.reshape(len(masks), -1).any(axis=1)
    for i, (frame, mask) in enumerate(zip(maps, masks, strict=True)):
        if labels[i]:
            inside = np.asarray(frame[mask], dtype=np.float64)
            k = math.ceil(share * inside.size)  # exact: Fraction times int
            scores[i] = np.partition(inside, inside.size - k)[inside.size - k]
        else:
            scores[i] = float(frame.max()) if frame.size else -np.inf
    return scores, labels.astype(np.uint8)


def ucsd_pixel_level(maps: ArrayOrVideos, masks: ArrayOrVideos, coverage: float = 0.4) -> FrameCriterion:
    """The UCSD "pixel-level" frame ROC (Mahadevan et al., CVPR 2010) over all frames of all videos given."""
    scores, labels = [], []
    for m, g in as_videos(maps, masks):
        s, y = ucsd_frame_scores(m, g, coverage)
        scores.append(s)
        labels.append(y)
    return frame_criterion(scores, labels)


def frame_criterion(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> FrameCriterion:
    """The UCSD criterion's ROC from per-frame scores and labels (:func:`ucsd_frame_scores`) computed in parts
    (videos, chunks of frames, processes), pooled in the order given."""
    all_scores = np.concatenate([np.asarray(s, dtype=np.float64) for s in scores]) if scores else np.empty(0)
    all_labels = np.concatenate([np.asarray(y, dtype=np.uint8) for y in labels]) if labels else np.empty(0, np.uint8)
    if all_scores.shape != all_labels.shape:
        raise ValueError(f"{all_scores.size} frame scores but {all_labels.size} labels")
    levels, positive, negative = _level_counts(all_scores, all_labels.astype(bool))
    return FrameCriterion(all_scores, all_labels, _roc_from_counts(levels, positive, negative))
