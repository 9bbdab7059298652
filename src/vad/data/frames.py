"""Decoding of frames from image files and video files into uint8 arrays (H, W, C), RGB channel order.

This is the only module that decodes images or videos; the frame cache calls it once per video (through
:func:`vad.data.index.iter_frames`, which reads a video's frame source with it).

    frame = read_image(Path("data/ped2/testing/frames/01/000.jpg"), channels=1)   # (240, 360, 1) uint8
    for frame in iter_video(Path("data/avenue/testing_videos/01.avi"), channels=3): ...
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from vad.errors import DataError

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
}


def _to_channels(frame: np.ndarray, channels: int, origin: Path) -> np.ndarray:
    """Convert a decoded OpenCV frame (grey, BGR or BGRA) to ``channels`` (1 = grey, 3 = RGB)."""
    if frame.dtype != np.uint8:
        # 16-bit TIFFs and the like: scale to 8 bits by the dtype's range.
        if np.issubdtype(frame.dtype, np.integer):
            frame = (frame.astype(np.float64) * 255.0 / np.iinfo(frame.dtype).max).round().astype(np.uint8)
        else:
            raise DataError(f"{origin}: unsupported pixel type {frame.dtype}; convert the frames to 8-bit images")
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if channels == 1:
        if frame.shape[2] == 3:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[:, :, None]
        return frame
    if channels == 3:
        if frame.shape[2] == 1:
            return np.repeat(frame, 3, axis=2)
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    raise ValueError(f"channels must be 1 or 3, got {channels}")


def read_image(path: Path, channels: int) -> np.ndarray:
    """Decode one image file to (H, W, channels) uint8 (RGB for 3 channels); a corrupt file raises DataError."""
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise DataError(f"{path}: frame file not found; re-run `python -m vad.prepare` or restore the file")
    frame = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if frame is None:
        raise DataError(f"{path}: cannot decode this frame (corrupt or not an image); replace or delete the file")
    return _to_channels(frame, channels, path)


def open_video(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(
            f"{path}: OpenCV cannot open this video (corrupt or unsupported codec); re-encode it to .avi/.mp4"
        )
    return cap


def iter_video(path: Path, channels: int) -> Iterator[np.ndarray]:
    """Decode every frame of a video file in order, as (H, W, channels) uint8."""
    cap = open_video(path)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield _to_channels(frame, channels, path)
    finally:
        cap.release()


def count_video_frames(path: Path) -> int:
    """Exact number of frames of a video file (counted by grabbing; container metadata is unreliable)."""
    cap = open_video(path)
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    if n == 0:
        raise DataError(f"{path}: the video has no decodable frames; re-encode or remove it")
    return n


def resize(frame: np.ndarray, size: tuple[int, int], interpolation: str = "linear") -> np.ndarray:
    """Resize (H, W, C) uint8 to ``size`` = (height, width); returns (height, width, C)."""
    h, w = size
    if frame.shape[:2] == (h, w):
        return frame
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
    out = cv2.resize(frame, (w, h), interpolation=INTERPOLATIONS[interpolation])
    return out[:, :, None] if out.ndim == 2 else out
