"""Pixel-level evaluation of anomaly maps against ground-truth masks: pixel AUC, the UCSD 40 % criterion, RBDC / TBDC.

Pure numpy and scipy; knows nothing about models. Conventions everywhere:

- an anomaly map is a float array (N, H, W), one map per frame, **higher = more anomalous**; a pixel is *detected* at
  threshold ``t`` when its value is ``>= t``;
- a mask is a bool array (N, H, W), True = anomalous pixel, at the ground truth's **native size** (:func:`read_masks`);
- every metric takes maps and masks of the same shape: one video as two (N, H, W) arrays, or several videos as two
  sequences of them (pixel AUC and the 40 % criterion pool all frames; RBDC / TBDC need the videos apart because
  tracks live inside one video). Frames a method cannot score (the first ``t`` of a predictor) are left out by the
  caller, on maps and masks alike (``masks[frames]``);
- maps are compared with the masks at the masks' size: :func:`resize_maps` brings a working-size map (e.g. 256²) to the
  ground truth's size (Ped2 240×360, Avenue 360×640, ShanghaiTech 480×856). The literature evaluates at the ground
  truth's size, and doing so keeps the ground truth exact: shrinking masks instead would change every region's area
  and IoU and the pixel counts of the 40 % criterion, and erase thin regions. :func:`resize_masks` (nearest) exists
  for quick looks at the working size, not for reported numbers.

    masks = read_masks(video.masks, video.num_frames)                  # (N, 240, 360) bool, Ped2
    maps = resize_maps(error_maps, masks.shape[1:])                     # (N, 256, 256) -> (N, 240, 360)
    pixel_auc(maps, masks)                                              # all pixels of all frames
    ucsd_pixel_level(maps, masks).auc                                   # the classic UCSD "pixel-level" AUC
    result = region_track_criteria([maps], [masks], thresholds=100)     # result.rbdc, result.tbdc

The metrics:

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

**RBDC / TBDC** (:func:`region_track_criteria`, streaming :class:`RegionTrackCriteria`; Ramachandra & Jones, "Street
Scene", WACV 2020), at every threshold ``t`` of a sweep over the maps' values:

- detected regions: the connected components of ``map >= t`` in each frame, **8-connectivity** (diagonal
  neighbours join);
- ground-truth regions: the connected components of each frame's mask, 8-connectivity; a ground-truth region is
  *detected* when its IoU (in pixels) with some detected region of the same frame is ``>= beta`` (0.1);
- a detected region is a *false positive* when its IoU with every ground-truth region of its frame is ``< beta``;
  false positives per frame = all false-positive regions / all frames evaluated (normal ones included);
- tracks: the Street Scene annotations carry track ids; masks do not, so a track is a connected component of the
  video's mask volume in space-time, **26-connectivity** (a region continues a track when it touches, in space or
  diagonally, a region of the previous or next frame; a frame without the anomaly ends the track). Each 2-D region
  lies inside exactly one such component. Where track ids exist, pass them (``tracks``): then a region is the pixels
  of one track in one frame, connected or not;
- a track is *detected* when at least ``alpha`` (0.1) of its regions are detected;
- RBDC = detected regions / all regions, TBDC = detected tracks / all tracks, each as a curve against false positives
  per frame; the reported number is the area under it for false positives per frame from 0 to 1 (divided by that
  width, 1, so it lies in [0, 1]). :func:`fp_curve_area` computes it: the curve starts at (0, 0) (a threshold above
  every value detects nothing); points are sorted by false positives and each rate is the best achieved at no more
  false positives (a cumulative maximum -- with connected components the raw curve need not be monotone, since
  regions merge as the threshold falls; the maximum changes nothing on a monotone curve); the area is the trapezoid
  rule, interpolated linearly at 1 false positive per frame, and continued flat when even the lowest threshold stays
  below 1.

The IoU >= beta and "at least alpha" tests are exact rational comparisons of pixel and region counts (0.1 is 1/10).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import ndimage

from vad.data.index import MaskSource, Video
from vad.data.labels import iter_masks, mask_location
from vad.errors import DataError

# In-plane 8-connectivity and space-time 26-connectivity (scipy structuring elements).
CONNECTIVITY_2D = np.ones((3, 3), dtype=bool)
CONNECTIVITY_3D = np.ones((3, 3, 3), dtype=bool)

ArrayOrVideos = np.ndarray | Sequence[np.ndarray]


# ----------------------------------------------------------------------------------------------------------------
# Reading and resizing
# ----------------------------------------------------------------------------------------------------------------


def read_masks(source: MaskSource, num_frames: int | None = None) -> np.ndarray:
    """A video's pixel masks as (N, H, W) bool (True = anomalous) at the masks' native size.

    Reads every format a :class:`MaskSource` holds: UCSD ``TestNNN_gt/*.bmp`` (or any mask images; a pixel > 0 is
    anomalous), ShanghaiTech ``test_pixel_mask/<video>.npy`` (N, H, W), Avenue ``<N>_label.mat`` (``volLabel`` cell).
    ``num_frames``: when given, a different number of masks raises DataError (as do masks of different sizes).
    """
    frames = list(iter_masks(source))
    origin = mask_location(source)
    if num_frames is not None and len(frames) != num_frames:
        raise DataError(f"{origin}: {len(frames)} pixel masks but the video has {num_frames} frames")
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise DataError(f"{origin}: pixel masks of different sizes {sorted(shapes)}")
    if not frames:
        return np.zeros((0, 0, 0), dtype=bool)
    return np.stack(frames).astype(bool, copy=False)


def video_masks(video: Video) -> np.ndarray | None:
    """The masks of an indexed test video (:func:`read_masks`, count checked against its frames), None without."""
    return None if video.masks is None else read_masks(video.masks, video.num_frames)


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    height, width = (int(s) for s in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be two positive integers (H, W), got {tuple(size)}")
    return height, width


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel, pixel centres aligned: floor((i + 0.5) n_in / n_out), in integers."""
    return ((2 * np.arange(n_out) + 1) * n_in) // (2 * n_out)


def _linear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two source indices and the weight of the second for each output pixel, pixel centres aligned (half-pixel
    offsets, as OpenCV's INTER_LINEAR and torch's align_corners=False); coordinates clamped at the borders."""
    x = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0.0, n_in - 1)
    i0 = np.floor(x).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, x - i0


def resize_masks(masks: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of (..., H, W) masks to ``size`` = (h, w), bool out.

    Output pixel i takes source pixel floor((i + 0.5) H / h) (pixel centres aligned). For looking at masks at a
    working size; reported numbers compare maps with masks at the masks' size (:func:`resize_maps`).
    """
    masks = np.asarray(masks)
    if masks.ndim < 2:
        raise ValueError(f"masks must be (..., H, W), got shape {masks.shape}")
    height, width = _check_size(size)
    rows = _nearest_index(masks.shape[-2], height)
    cols = _nearest_index(masks.shape[-1], width)
    return (masks[..., rows, :][..., :, cols] != 0).astype(bool, copy=False)


def resize_maps(maps: np.ndarray, size: Sequence[int], interpolation: str = "linear") -> np.ndarray:
    """Resize (..., H, W) anomaly maps to ``size`` = (h, w), the masks' size: float32 (float64 kept) out.

    ``interpolation``: ``"linear"`` (bilinear, pixel centres aligned, borders clamped -- the usual upsampling of an
    error map; like OpenCV's INTER_LINEAR it does not low-pass when shrinking) or ``"nearest"`` (the same index
    rule as :func:`resize_masks`; keeps the map's values, e.g. for block-wise scores).
    """
    maps = np.asarray(maps)
    if maps.ndim < 2:
        raise ValueError(f"maps must be (..., H, W), got shape {maps.shape}")
    height, width = _check_size(size)
    dtype = np.float64 if maps.dtype == np.float64 else np.float32
    maps = maps.astype(dtype, copy=False)
    if interpolation == "nearest":
        rows = _nearest_index(maps.shape[-2], height)
        cols = _nearest_index(maps.shape[-1], width)
        return maps[..., rows, :][..., :, cols]
    if interpolation != "linear":
        raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
    r0, r1, wr = _linear_weights(maps.shape[-2], height)
    c0, c1, wc = _linear_weights(maps.shape[-1], width)
    wr = wr.astype(dtype)[:, None]
    wc = wc.astype(dtype)
    rows = maps[..., r0, :] * (1 - wr) + maps[..., r1, :] * wr
    return rows[..., :, c0] * (1 - wc) + rows[..., :, c1] * wc


# ----------------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------------


def _as_videos(maps: ArrayOrVideos, masks: ArrayOrVideos) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs (maps (N, H, W) float, masks (N, H, W) bool) per video, shapes and values checked."""
    if isinstance(maps, np.ndarray) != isinstance(masks, np.ndarray):
        raise ValueError("pass maps and masks alike: two (N, H, W) arrays (one video) or two sequences of them")
    map_list = [maps] if isinstance(maps, np.ndarray) else list(maps)
    mask_list = [masks] if isinstance(masks, np.ndarray) else list(masks)
    if len(map_list) != len(mask_list):
        raise ValueError(f"{len(map_list)} videos of maps but {len(mask_list)} videos of masks")
    pairs = []
    for k, (m, g) in enumerate(zip(map_list, mask_list, strict=True)):
        pairs.append(_check_video(m, g, f"video {k}"))
    return pairs


def _check_video(maps: np.ndarray, masks: np.ndarray, what: str = "video") -> tuple[np.ndarray, np.ndarray]:
    maps, masks = np.asarray(maps), np.asarray(masks)
    if maps.ndim != 3:
        raise ValueError(f"{what}: anomaly maps must be (N, H, W), got shape {maps.shape}")
    if masks.shape != maps.shape:
        raise ValueError(
            f"{what}: maps {maps.shape} and masks {masks.shape} differ; resize the maps to the masks' size "
            "(resize_maps) and pass the same frames of both"
        )
    if maps.dtype == bool or not np.issubdtype(maps.dtype, np.number):
        raise ValueError(f"{what}: anomaly maps must be numeric, got {maps.dtype}")
    if not np.isfinite(maps).all():
        raise ValueError(f"{what}: anomaly maps hold NaN or infinite values")
    return maps, masks.astype(bool, copy=False)


def _ratio(value: float, name: str) -> Fraction:
    """A rate in (0, 1] as an exact fraction of its decimal form (0.1 -> 1/10)."""
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return Fraction(repr(float(value)))


def _single_class_nan(what: str) -> float:
    warnings.warn(f"{what}: the metric is undefined (NaN)", RuntimeWarning, stacklevel=3)
    return math.nan


# ----------------------------------------------------------------------------------------------------------------
# ROC from counts per score level (pixel AUC and the UCSD criterion)
# ----------------------------------------------------------------------------------------------------------------


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
        nan = _single_class_nan(f"{n_pos} positives and {n_neg} negatives")
        empty = np.empty(0)
        return Roc(empty, empty, empty, nan, nan, n_pos, n_neg)
    tp = np.concatenate([[0], np.cumsum(positive[::-1], dtype=np.float64)])
    fp = np.concatenate([[0], np.cumsum(negative[::-1], dtype=np.float64)])
    tpr, fpr = tp / n_pos, fp / n_neg
    thresholds = np.concatenate([[np.inf], np.asarray(levels, dtype=np.float64)[::-1]])
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)
    return Roc(fpr, tpr, thresholds, auc, _equal_error_rate(fpr, tpr), n_pos, n_neg)


def _equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Where the false-positive rate equals the miss rate 1 - TPR, linearly interpolated along the ROC."""
    gap = (1.0 - tpr) - fpr
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0 or i == 0:
        return float(fpr[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def _level_counts(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique values (increasing) and the number of positive / negative items at each."""
    levels, inverse = np.unique(values, return_inverse=True)
    inverse = inverse.reshape(-1)
    labels = labels.reshape(-1)
    positive = np.bincount(inverse[labels], minlength=levels.size).astype(np.int64)
    negative = np.bincount(inverse[~labels], minlength=levels.size).astype(np.int64)
    return levels, positive, negative


# ----------------------------------------------------------------------------------------------------------------
# Pixel AUC
# ----------------------------------------------------------------------------------------------------------------


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
        maps, masks = _check_video(maps, masks)
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
    videos = _as_videos(maps, masks)
    if bins is not None and value_range is None:
        finite = [m for m, _ in videos if m.size]
        lo = min((float(m.min()) for m in finite), default=0.0)
        hi = max((float(m.max()) for m in finite), default=0.0)
        value_range = (lo, hi)
    accumulator = PixelROC(bins=bins, value_range=value_range, anomalous_frames_only=anomalous_frames_only)
    for m, g in videos:
        accumulator.update(m, g)
    return accumulator.auc()


# ----------------------------------------------------------------------------------------------------------------
# UCSD pixel-level criterion (40 % of the anomalous pixels)
# ----------------------------------------------------------------------------------------------------------------


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
    maps, masks = _check_video(maps, masks)
    share = _ratio(coverage, "coverage")
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
    for m, g in _as_videos(maps, masks):
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


# ----------------------------------------------------------------------------------------------------------------
# RBDC / TBDC
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroundTruthRegions:
    """The ground-truth regions of one video.

    ``labels`` (N, H, W) int32: region id per pixel, 1..R, numbered frame by frame (0 = no region); ``offsets``
    (N + 1,): the regions of frame f are ids offsets[f] + 1 .. offsets[f + 1]; ``area`` (R,) pixels per region;
    ``track`` (R,) the track (0..T-1) of each region; ``track_length`` (T,) regions per track.
    """

    labels: np.ndarray
    offsets: np.ndarray
    area: np.ndarray
    track: np.ndarray
    track_length: np.ndarray

    @property
    def n_regions(self) -> int:
        return int(self.area.size)

    @property
    def n_tracks(self) -> int:
        return int(self.track_length.size)


def ground_truth_regions(masks: np.ndarray, tracks: np.ndarray | None = None) -> GroundTruthRegions:
    """Regions and tracks of a video's masks (N, H, W).

    Without ``tracks``: regions are the 8-connected components of each frame's mask, tracks the 26-connected
    components of the mask volume in space-time. With ``tracks`` (N, H, W) integer track ids (0 = none, nonzero
    exactly where the mask is set): a region is the pixels of one track id in one frame.
    """
    masks = np.asarray(masks).astype(bool, copy=False)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    n = len(masks)
    labels = np.zeros(masks.shape, dtype=np.int32)
    offsets = np.zeros(n + 1, dtype=np.int64)
    if tracks is None:
        volume, _ = ndimage.label(masks, structure=CONNECTIVITY_3D)
        for f in range(n):
            local, count = ndimage.label(masks[f], structure=CONNECTIVITY_2D)
            labels[f] = np.where(local > 0, local + offsets[f], 0)
            offsets[f + 1] = offsets[f] + count
        track_of = np.zeros(int(offsets[-1]) + 1, dtype=np.int64)
        track_of[labels[masks]] = volume[masks] - 1
    else:
        tracks = np.asarray(tracks)
        if tracks.shape != masks.shape or not np.issubdtype(tracks.dtype, np.integer):
            raise ValueError(
                f"tracks must be integer ids of the masks' shape {masks.shape}, got {tracks.dtype} {tracks.shape}"
            )
        if not np.array_equal(tracks != 0, masks):
            raise ValueError("tracks must be nonzero exactly where the masks are set")
        ids = np.unique(tracks[masks])  # the video's track ids -> 0..T-1
        track_of = np.zeros(1, dtype=np.int64)
        parts = [track_of]
        for f in range(n):
            present = np.unique(tracks[f][masks[f]])
            local = np.searchsorted(present, tracks[f]) + 1
            labels[f] = np.where(masks[f], local + offsets[f], 0)
            offsets[f + 1] = offsets[f] + present.size
            parts.append(np.searchsorted(ids, present))
        track_of = np.concatenate(parts).astype(np.int64)
    area = np.bincount(labels.reshape(-1), minlength=int(offsets[-1]) + 1)[1:].astype(np.int64)
    track = track_of[1:]
    n_tracks = int(track.max()) + 1 if track.size else 0
    return GroundTruthRegions(labels, offsets, area, track, np.bincount(track, minlength=n_tracks).astype(np.int64))


def fp_curve_area(fp_per_frame: np.ndarray, rate: np.ndarray, max_fp: float = 1.0) -> float:
    """Area under a detection-rate curve against false positives per frame, from 0 to ``max_fp``, divided by
    ``max_fp`` (see the module docstring: starts at (0, 0), cumulative maximum, trapezoids, flat continuation)."""
    if max_fp <= 0:
        raise ValueError(f"max_fp must be positive, got {max_fp}")
    x = np.concatenate([[0.0], np.asarray(fp_per_frame, dtype=np.float64)])
    y = np.concatenate([[0.0], np.asarray(rate, dtype=np.float64)])
    if x.shape != y.shape:
        raise ValueError(f"fp_per_frame and rate differ in length ({x.size - 1} vs {y.size - 1})")
    order = np.lexsort((y, x))
    x, y = x[order], np.maximum.accumulate(y[order])
    inside = x <= max_fp
    xs, ys = x[inside], y[inside]
    if inside.all():
        end = ys[-1]
    else:
        right = int(np.argmax(~inside))
        x0, y0, x1, y1 = xs[-1], ys[-1], x[right], y[right]
        end = y0 + (y1 - y0) * (max_fp - x0) / (x1 - x0)
    xs, ys = np.append(xs, max_fp), np.append(ys, end)
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1])) / 2.0 / max_fp)


@dataclass(frozen=True)
class DetectionCriteria:
    """RBDC and TBDC of a threshold sweep.

    Per threshold (``thresholds`` decreasing): ``false_positives`` (regions), ``regions_detected``,
    ``tracks_detected``; ``fp_per_frame`` = false_positives / n_frames, ``region_rate`` and ``track_rate`` the
    detection rates. ``rbdc`` / ``tbdc``: the areas of the two curves for 0..1 false positives per frame.
    """

    thresholds: np.ndarray
    false_positives: np.ndarray
    regions_detected: np.ndarray
    tracks_detected: np.ndarray
    n_frames: int
    n_regions: int
    n_tracks: int
    beta: float
    alpha: float
    rbdc: float
    tbdc: float

    @property
    def fp_per_frame(self) -> np.ndarray:
        return self.false_positives / max(self.n_frames, 1)

    @property
    def region_rate(self) -> np.ndarray:
        return self.regions_detected / self.n_regions if self.n_regions else np.full(self.thresholds.size, np.nan)

    @property
    def track_rate(self) -> np.ndarray:
        return self.tracks_detected / self.n_tracks if self.n_tracks else np.full(self.thresholds.size, np.nan)


class RegionTrackCriteria:
    """Streaming RBDC / TBDC (Ramachandra & Jones, WACV 2020) at fixed ``thresholds``: :meth:`update` once per whole
    video (tracks are found inside a video), then :meth:`result`. ``beta``: IoU for a region to count as detected (and
    below which a detection is a false positive); ``alpha``: share of a track's regions that must be detected.
    """

    def __init__(self, thresholds: Sequence[float] | np.ndarray, *, beta: float = 0.1, alpha: float = 0.1) -> None:
        values = np.unique(np.asarray(thresholds, dtype=np.float64).reshape(-1))[::-1]
        if values.size == 0 or not np.isfinite(values).all():
            raise ValueError("thresholds must be one or more finite values")
        self.thresholds = values.copy()
        self.beta, self.alpha = float(beta), float(alpha)
        self._beta = _ratio(beta, "beta")
        self._alpha = _ratio(alpha, "alpha")
        size = self.thresholds.size
        self._false_positives = np.zeros(size, dtype=np.int64)
        self._regions_detected = np.zeros(size, dtype=np.int64)
        self._tracks_detected = np.zeros(size, dtype=np.int64)
        self._frames = self._regions = self._tracks = 0

    def update(self, maps: np.ndarray, masks: np.ndarray, tracks: np.ndarray | None = None) -> None:
        """Add one whole video: ``maps`` (N, H, W), ``masks`` (N, H, W) bool, optional ``tracks`` (N, H, W) ids."""
        maps, masks = _check_video(maps, masks)
        regions = ground_truth_regions(masks, tracks)
        hit = np.zeros((regions.n_regions, self.thresholds.size), dtype=bool)
        num, den = self._beta.numerator, self._beta.denominator
        for f, frame in enumerate(maps):
            first, last = int(regions.offsets[f]), int(regions.offsets[f + 1])
            n_gt = last - first
            gt = np.where(regions.labels[f] > 0, regions.labels[f] - first, 0)
            gt_area = regions.area[first:last]
            top = frame.max() if frame.size else -np.inf
            for k in np.flatnonzero(self.thresholds <= top):
                detected, n_det = ndimage.label(frame >= self.thresholds[k], structure=CONNECTIVITY_2D)
                if n_gt == 0:
                    self._false_positives[k] += n_det
                    continue
                both = (gt > 0) & (detected > 0)
                pairs = gt[both].astype(np.int64) * (n_det + 1) + detected[both]
                inter = np.bincount(pairs, minlength=(n_gt + 1) * (n_det + 1)).reshape(n_gt + 1, n_det + 1)[1:, 1:]
                det_area = np.bincount(detected.reshape(-1), minlength=n_det + 1)[1:]
                union = gt_area[:, None] + det_area[None, :] - inter
                match = inter * den >= num * union  # IoU >= beta, exactly
                hit[first:last, k] = match.any(axis=1)
                self._false_positives[k] += int(np.count_nonzero(~match.any(axis=0)))
        self._regions_detected += hit.sum(axis=0)
        per_track = np.zeros((regions.n_tracks, self.thresholds.size), dtype=np.int64)
        np.add.at(per_track, regions.track, hit.astype(np.int64))
        need = regions.track_length[:, None] * self._alpha.numerator
        self._tracks_detected += (per_track * self._alpha.denominator >= need).sum(axis=0)
        self._frames += len(maps)
        self._regions += regions.n_regions
        self._tracks += regions.n_tracks

    def merge(self, other: RegionTrackCriteria) -> None:
        """Add the counts of ``other`` (other whole videos, e.g. another process's), which must use the same
        thresholds, ``beta`` and ``alpha``."""
        same_thresholds = np.array_equal(other.thresholds, self.thresholds)
        if not same_thresholds or (other.beta, other.alpha) != (self.beta, self.alpha):
            raise ValueError("merge: the two RegionTrackCriteria differ in thresholds, beta or alpha")
        self._false_positives += other._false_positives
        self._regions_detected += other._regions_detected
        self._tracks_detected += other._tracks_detected
        self._frames += other._frames
        self._regions += other._regions
        self._tracks += other._tracks

    def result(self) -> DetectionCriteria:
        """The curves and their areas; RBDC / TBDC are NaN (with a RuntimeWarning) without any ground-truth region."""
        fp = self._false_positives / max(self._frames, 1)
        if self._regions:
            rbdc = fp_curve_area(fp, self._regions_detected / self._regions)
            tbdc = fp_curve_area(fp, self._tracks_detected / self._tracks)
        else:
            rbdc = tbdc = _single_class_nan(f"no ground-truth region in {self._frames} frames")
        return DetectionCriteria(
            thresholds=self.thresholds.copy(),
            false_positives=self._false_positives.copy(),
            regions_detected=self._regions_detected.copy(),
            tracks_detected=self._tracks_detected.copy(),
            n_frames=self._frames,
            n_regions=self._regions,
            n_tracks=self._tracks,
            beta=self.beta,
            alpha=self.alpha,
            rbdc=rbdc,
            tbdc=tbdc,
        )


def sweep_thresholds(maps: ArrayOrVideos, count: int = 100) -> np.ndarray:
    """``count`` thresholds evenly spaced from the maps' minimum to their maximum (both included), decreasing."""
    if count < 1:
        raise ValueError(f"count must be a positive integer, got {count}")
    arrays = [maps] if isinstance(maps, np.ndarray) else list(maps)
    arrays = [np.asarray(m) for m in arrays if np.asarray(m).size]
    if not arrays:
        raise ValueError("no map values to place thresholds on")
    return threshold_sweep(min(float(m.min()) for m in arrays), max(float(m.max()) for m in arrays), count)


def threshold_sweep(lo: float, hi: float, count: int = 100) -> np.ndarray:
    """``count`` thresholds evenly spaced from ``lo`` to ``hi`` (both included), decreasing; one when lo == hi."""
    if count < 1:
        raise ValueError(f"count must be a positive integer, got {count}")
    return np.linspace(hi, lo, count) if hi > lo else np.array([hi])


def region_track_criteria(
    maps: ArrayOrVideos,
    masks: ArrayOrVideos,
    *,
    thresholds: int | str | Sequence[float] | np.ndarray = 100,
    beta: float = 0.1,
    alpha: float = 0.1,
    tracks: Sequence[np.ndarray | None] | None = None,
) -> DetectionCriteria:
    """RBDC and TBDC of anomaly maps against masks, videos given apart (see the module docstring).

    ``thresholds``: an integer (that many, evenly spaced from the maps' minimum to their maximum; one threshold is
    shared by all videos, so per-video normalisation of the maps changes the result), ``"unique"`` (every distinct
    map value: exact, for small inputs) or explicit values. ``tracks``: per video, track ids or None (space-time
    components of the masks). Cost: one connected-component labelling per frame and threshold at or below the
    frame's maximum.
    """
    videos = _as_videos(maps, masks)
    if isinstance(thresholds, str):
        if thresholds != "unique":
            raise ValueError(f"thresholds must be a count, 'unique' or values, got {thresholds!r}")
        values = np.unique(np.concatenate([m.reshape(-1) for m, _ in videos]).astype(np.float64))
    elif isinstance(thresholds, int | np.integer):
        values = sweep_thresholds([m for m, _ in videos], int(thresholds))
    else:
        values = np.asarray(thresholds, dtype=np.float64)
    if tracks is not None and len(tracks) != len(videos):
        raise ValueError(f"tracks given for {len(tracks)} videos but there are {len(videos)}")
    criteria = RegionTrackCriteria(values, beta=beta, alpha=alpha)
    for k, (m, g) in enumerate(videos):
        criteria.update(m, g, None if tracks is None else tracks[k])
    return criteria.result()
