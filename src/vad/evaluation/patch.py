"""AMC's max-patch score (Nguyen & Meunier, ICCV 2019): a per-frame signal built from per-pixel error maps, in torch.

:func:`max_patch` finds the window with the largest mean flow error S_F and reads the mean intensity error S_I in that
same window, and :func:`patch_score` combines them as ``log(w_F S_F) + lambda log(w_I S_I)``. Under min-max
normalisation the constants ``log w`` cancel; dividing these (typically negative) log scores by their video maximum,
as the paper writes it, reverses their order (see :func:`vad.evaluation.fusion.divide_by_max`).

    chosen = max_patch(flow_error_map, intensity_error_map, window=16, stride=4)
    score = patch_score(chosen.select, chosen.value, lam=0.2)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from vad.errors import ConfigError


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
    mean counts as the largest (the frame's score is then NaN, dropped by
    :func:`vad.evaluation.protocol.evaluate`). Results are float32
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
    w_I`` cancel; under division by the video max they do not (see :func:`vad.evaluation.fusion.divide_by_max`).
    Raises ValueError for a weight or ``eps`` that is not > 0.
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
