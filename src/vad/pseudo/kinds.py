"""The pseudo-anomaly operations, pure numpy on uint8 frames (N, C, H, W): frame orders and moving patches.

Everything here takes its randomness as arguments or from a ``numpy.random.Generator`` the caller seeds, so a
pseudo-anomaly is a deterministic function of (seed, what it is applied to).

    clip = skipped_frames(start=10, clip_len=5, stride=3)            # [10, 13, 16, 19, 22]
    track = patch_track(rng, (64, 64), (16, 16), length=5, speed=(1, 4))
    paste_patch(frame, patch, track[0], smooth_mask((16, 16), edge=3))
"""

from __future__ import annotations

from collections.abc import Sequence

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


def patch_size(rng: np.random.Generator, frame_size: tuple[int, int], fraction: Sequence[float]) -> tuple[int, int]:
    """A square patch side drawn from ``fraction`` (a [low, high] share of the frame's shorter side), at least 2 px."""
    side = min(frame_size)
    lo, hi = float(fraction[0]), float(fraction[1])
    edge = max(2, round(rng.uniform(lo, hi) * side))
    edge = min(edge, side)
    return edge, edge
