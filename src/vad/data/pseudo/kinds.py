"""The pseudo-anomaly operations, pure numpy on uint8 frames (N, C, H, W): frame orders and moving patches.

Everything here takes its randomness as arguments or from a ``numpy.random.Generator`` the caller seeds, so a
pseudo-anomaly is a deterministic function of (seed, what it is applied to).

    clip = skipped_frames(start=10, clip_len=5, stride=3)            # [10, 13, 16, 19, 22]
    track = patch_track(rng, (64, 64), (16, 16), length=5, speed=(1, 4))
    paste_patch(frame, patch, track[0], smooth_mask((16, 16), edge=3))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np


def skipped_frames(start: int, clip_len: int, stride: int) -> list[int]:
    """Frame indices of a clip sampled every ``stride`` frames from ``start`` (a skip-frame clip for stride > 1)."""
    return [start + k * stride for k in range(clip_len)]


def speed_frames(start: int, clip_len: int, factor: float) -> list[int]:
    """Frame indices of a clip played at ``factor`` x speed from ``start``: 0.5 repeats every frame (slow motion),
    2 skips every other frame; frame k is ``start + round(k * factor)``."""
    return [start + round(k * factor) for k in range(clip_len)]


def smooth_mask(size: tuple[int, int], edge: int) -> np.ndarray:
    """float32 (h, w) blending mask (SmoothMix-style): 1 inside, falling linearly to 0 over ``edge`` pixels at the
    border, so a pasted patch leaves no hard seam a detector could key on instead of its content or motion."""
    h, w = size
    if edge <= 0:
        return np.ones((h, w), dtype=np.float32)
    ramp_y = np.minimum(np.arange(h) + 1, np.arange(h)[::-1] + 1).astype(np.float32) / (edge + 1)
    ramp_x = np.minimum(np.arange(w) + 1, np.arange(w)[::-1] + 1).astype(np.float32) / (edge + 1)
    return np.clip(np.minimum.outer(ramp_y, ramp_x), 0.0, 1.0)


def patch_track(
    rng: np.random.Generator,
    frame_size: tuple[int, int],
    patch_size: tuple[int, int],
    length: int,
    speed: Sequence[float],
) -> list[tuple[int, int]]:
    """Top-left corners of a patch moving in a straight line for ``length`` frames at a speed (pixels per frame)
    drawn from ``[speed[0], speed[1]]`` in a random direction; it bounces off the borders, so every position keeps
    the whole patch inside the frame."""
    fh, fw = frame_size
    ph, pw = patch_size
    if ph > fh or pw > fw:
        raise ValueError(f"a {ph}x{pw} patch does not fit in a {fh}x{fw} frame")
    span_y, span_x = fh - ph, fw - pw
    y, x = rng.uniform(0, span_y), rng.uniform(0, span_x)
    angle = rng.uniform(0, 2 * np.pi)
    step = rng.uniform(float(speed[0]), float(speed[1]))
    vy, vx = step * np.sin(angle), step * np.cos(angle)
    track = []
    for _ in range(length):
        track.append((round(y), round(x)))
        y, vy = _bounce(y + vy, vy, span_y)
        x, vx = _bounce(x + vx, vx, span_x)
    return track


def _bounce(position: float, velocity: float, span: float) -> tuple[float, float]:
    """Reflect a coordinate that left [0, span] back inside, reversing its velocity."""
    if span <= 0:
        return 0.0, velocity
    for _ in range(4):  # a step longer than the span may need more than one reflection
        if position < 0:
            position, velocity = -position, -velocity
        elif position > span:
            position, velocity = 2 * span - position, -velocity
        else:
            break
    return float(np.clip(position, 0, span)), velocity


def paste_patch(frame: np.ndarray, patch: np.ndarray, corner: tuple[int, int], mask: np.ndarray) -> None:
    """Blend ``patch`` (C, h, w) into ``frame`` (C, H, W) uint8 in place at ``corner`` with weights ``mask`` (h, w)."""
    y, x = corner
    _, h, w = patch.shape
    region = frame[:, y : y + h, x : x + w]
    if region.shape != patch.shape:
        raise ValueError(f"a {h}x{w} patch at {corner} leaves the {frame.shape[1]}x{frame.shape[2]} frame")
    blended = mask * patch.astype(np.float32) + (1.0 - mask) * region.astype(np.float32)
    region[...] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def random_patch(
    rng: np.random.Generator, frame: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """A (C, h, w) copy of a random window of ``frame`` (C, H, W), and its top-left corner."""
    _, fh, fw = frame.shape
    h, w = size
    y, x = int(rng.integers(0, fh - h + 1)), int(rng.integers(0, fw - w + 1))
    return frame[:, y : y + h, x : x + w].copy(), (y, x)


class MovingObject(NamedTuple):
    """One moving object found in one frame: its bounding box (pixels) and its area (foreground pixels)."""

    height: int
    width: int
    area: int
    frame: int
    y: int
    x: int


def moving_objects(
    frames: np.ndarray, samples: int = 24, threshold: int = 20, background_frames: int = 64
) -> list[MovingObject]:
    """The moving objects of a static-camera video (uint8 (N, C, H, W)):
    pixels that differ from the video's temporal median (its background, from up to ``background_frames`` evenly
    spaced frames) by more than ``threshold`` grey levels, cleaned by a 3x3 opening (noise) and a 5x5 closing (the
    parts of one object), grouped into 8-connected components of at least 6 pixels, in up to ``samples`` evenly
    spaced frames."""
    grey = frames.astype(np.float32).mean(axis=1)  # (N, H, W)
    count = len(grey)
    if count == 0:
        return []
    background = np.median(grey[np.linspace(0, count - 1, min(count, background_frames)).round().astype(int)], axis=0)
    open_kernel = np.ones((3, 3), np.uint8)
    close_kernel = np.ones((5, 5), np.uint8)
    objects = []
    for index in np.unique(np.linspace(0, count - 1, min(count, samples)).round().astype(int)):
        foreground = (np.abs(grey[index] - background) > threshold).astype(np.uint8)
        foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, open_kernel)
        foreground = cv2.morphologyEx(foreground, cv2.MORPH_CLOSE, close_kernel)
        _, _, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
        for x, y, width, height, area in stats[1:].tolist():  # row 0 is the background
            if area >= 6:
                objects.append(MovingObject(height, width, area, int(index), y, x))
    return objects


def typical_object_size(objects: Sequence[MovingObject]) -> tuple[float, float]:
    """The (height, width) of the object that a typical moving pixel belongs to: the area-weighted medians of the
    heights and of the widths of ``objects`` (:func:`moving_objects`), so the many small fragments that thresholding
    leaves (a leg, a shadow's edge) do not outvote the people they belong to."""
    if not objects:
        raise ValueError("no moving object to take a size from")
    table = np.asarray([(o.height, o.width, o.area) for o in objects], dtype=np.float64)

    def weighted_median(values: np.ndarray) -> float:
        order = np.argsort(values, kind="stable")
        cumulative = np.cumsum(table[order, 2])
        return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])

    return weighted_median(table[:, 0]), weighted_median(table[:, 1])


def large_enough(objects: Sequence[MovingObject], size: Sequence[float]) -> list[MovingObject]:
    """The ``objects`` at least half the typical ``size`` (height, width) in both sides: whole people, not the
    fragments that thresholding leaves; where scene-sized pseudo-anomalies are cut or centred."""
    return [o for o in objects if o.height >= size[0] / 2 and o.width >= size[1] / 2]


def scene_patch_size(
    rng: np.random.Generator, frame_size: tuple[int, int], object_size: Sequence[float], scale: Sequence[float]
) -> tuple[int, int]:
    """A patch of the scene's moving-object size (``object_size``, (height, width) pixels, e.g.
    :func:`typical_object_size`) times a factor drawn from ``[scale[0], scale[1]]``, its aspect kept, at least 2 px
    and at most the frame."""
    factor = rng.uniform(float(scale[0]), float(scale[1]))
    h = min(max(2, round(float(object_size[0]) * factor)), frame_size[0])
    w = min(max(2, round(float(object_size[1]) * factor)), frame_size[1])
    return h, w


def patch_size(rng: np.random.Generator, frame_size: tuple[int, int], fraction: Sequence[float]) -> tuple[int, int]:
    """A square patch side drawn from ``fraction`` (a [low, high] share of the frame's shorter side), at least 2 px."""
    side = min(frame_size)
    lo, hi = float(fraction[0]), float(fraction[1])
    edge = max(2, round(rng.uniform(lo, hi) * side))
    edge = min(edge, side)
    return edge, edge
