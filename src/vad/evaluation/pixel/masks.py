"""Pixel masks and anomaly maps: reading the ground truth, resizing maps to it, and the checks every pixel metric
makes of its inputs (:mod:`vad.evaluation.pixel.roc`, :mod:`vad.evaluation.pixel.regions`).

Pure numpy; knows nothing about models. Conventions of every pixel metric:

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
    pixel_auc(maps, masks)                                              # vad.evaluation.pixel.roc
    result = region_track_criteria([maps], [masks], thresholds=100)     # vad.evaluation.pixel.regions
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from vad.data.index import MaskSource, Video
from vad.data.labels import iter_masks, mask_location
from vad.errors import DataError

#: one video's maps or masks (N, H, W), or one such array per video
ArrayOrVideos = np.ndarray | Sequence[np.ndarray]


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


def as_videos(maps: ArrayOrVideos, masks: ArrayOrVideos) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs (maps (N, H, W) float, masks (N, H, W) bool) per video, shapes and values checked."""
    if isinstance(maps, np.ndarray) != isinstance(masks, np.ndarray):
        raise ValueError("pass maps and masks alike: two (N, H, W) arrays (one video) or two sequences of them")
    map_list = [maps] if isinstance(maps, np.ndarray) else list(maps)
    mask_list = [masks] if isinstance(masks, np.ndarray) else list(masks)
    if len(map_list) != len(mask_list):
        raise ValueError(f"{len(map_list)} videos of maps but {len(mask_list)} videos of masks")
    pairs = []
    for k, (m, g) in enumerate(zip(map_list, mask_list, strict=True)):
        pairs.append(check_video(m, g, f"video {k}"))
    return pairs


def check_video(maps: np.ndarray, masks: np.ndarray, what: str = "video") -> tuple[np.ndarray, np.ndarray]:
    """One video's maps (N, H, W) numeric and finite, and its masks of the same shape as bool; ValueError naming
    ``what`` otherwise."""
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


def exact_ratio(value: float, name: str) -> Fraction:
    """A rate in (0, 1] as an exact fraction of its decimal form (0.1 -> 1/10)."""
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return Fraction(repr(float(value)))


def undefined_metric(what: str) -> float:
    """NaN, with a RuntimeWarning saying why (``what``) at the caller of the metric."""
    warnings.warn(f"{what}: the metric is undefined (NaN)", RuntimeWarning, stacklevel=3)
    return math.nan
