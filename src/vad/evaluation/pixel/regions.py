"""RBDC / TBDC of anomaly maps against masks: region- and track-based detection criteria (Street Scene).

Pure numpy and scipy; maps and masks as :mod:`vad.evaluation.pixel.masks` describes them, videos given apart
(tracks live inside one video).

    result = region_track_criteria([maps], [masks], thresholds=100)     # result.rbdc, result.tbdc

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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from vad.evaluation.pixel.masks import ArrayOrVideos, as_videos, check_video, exact_ratio, undefined_metric

# In-plane 8-connectivity and space-time 26-connectivity (scipy structuring elements).
CONNECTIVITY_2D = np.ones((3, 3), dtype=bool)
CONNECTIVITY_3D = np.ones((3, 3, 3), dtype=bool)


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
        self._beta = exact_ratio(beta, "beta")
        self._alpha = exact_ratio(alpha, "alpha")
        size = self.thresholds.size
        self._false_positives = np.zeros(size, dtype=np.int64)
        self._regions_detected = np.zeros(size, dtype=np.int64)
        self._tracks_detected = np.zeros(size, dtype=np.int64)
        self._frames = self._regions = self._tracks = 0

    def update(self, maps: np.ndarray, masks: np.ndarray, tracks: np.ndarray | None = None) -> None:
        """Add one whole video: ``maps`` (N, H, W), ``masks`` (N, H, W) bool, optional ``tracks`` (N, H, W) ids."""
        maps, masks = check_video(maps, masks)
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
            rbdc = tbdc = undefined_metric(f"no ground-truth region in {self._frames} frames")
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
    videos = as_videos(maps, masks)
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
