"""The inputs ``vad.score`` reads (a video file, a frame folder, a folder of them, a camera, a stream URL, or frames a
program produces) and the reader thread that decodes and converts their frames.

    sources = open_inputs("clip.mp4")                         # or a folder, "0" (camera 0), "rtsp://...", ...
    threading.Thread(target=read_frames, args=(sources[0], spec, frames_in, stop)).start()

The reader converts each frame to the detector's channels and resizes it to its working size exactly as the frame
cache does (``vad.data.frames``), so a file read here gives the frames ``vad.evaluate`` tests on.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vad.data.frames import _to_channels, count_video_frames, resize
from vad.data.index import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, list_dirs, list_images, list_videos
from vad.errors import DataError
from vad.inference.spec import InputSpec

#: frames/s given to a frame folder (it has no clock of its own) unless ``fps`` is set
DEFAULT_FPS = 25.0


@dataclass
class Source:
    """One input: ``name`` (run sub-folder and report), ``frames()`` the decoded OpenCV frames (BGR / grey) in
    order, ``fps``, ``total`` frames when known (files; None for live input), ``live`` (times are wall-clock)."""

    name: str
    frames: Callable[[], Iterator[np.ndarray]]
    fps: float
    total: int | None
    live: bool
    origin: str


def _capture_frames(cap: cv2.VideoCapture) -> Iterator[np.ndarray]:
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield frame
    finally:
        cap.release()


def _video_file(path: Path) -> Source:
    total = count_video_frames(path)  # raises DataError for an unreadable file
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
    cap.release()

    def frames() -> Iterator[np.ndarray]:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise DataError(f"{path}: OpenCV cannot open this video (corrupt or unsupported codec); re-encode it")
        return _capture_frames(cap)

    return Source(path.stem, frames, float(fps), total, live=False, origin=str(path))


def _image_folder(folder: Path, fps: float) -> Source:
    files = list_images(folder)

    def frames() -> Iterator[np.ndarray]:
        for file in files:
            data = np.fromfile(str(file), dtype=np.uint8)
            frame = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
            if frame is None:
                raise DataError(f"{file}: cannot decode this frame (corrupt or not an image); replace or delete it")
            yield frame

    return Source(folder.name, frames, fps, len(files), live=False, origin=str(folder))


def _live(target: int | str) -> Source:
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        what = f"camera {target}" if isinstance(target, int) else f"stream {target}"
        raise DataError(f"{what}: OpenCV cannot open it; check the device index / URL and that nothing else uses it")
    fps = cap.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
    opened = [cap]

    def frames() -> Iterator[np.ndarray]:
        return _capture_frames(opened.pop() if opened else cv2.VideoCapture(target))

    name = f"camera{target}" if isinstance(target, int) else "stream"
    return Source(name, frames, float(fps), None, live=True, origin=str(target))


def iterable_source(name: str, frames: Iterable[np.ndarray], fps: float = DEFAULT_FPS, live: bool = True) -> Source:
    """A source over frames a program produces (a generator, a pipe reader): OpenCV-style BGR / grey uint8."""
    return Source(name, lambda: iter(frames), fps, None, live=live, origin=name)


def open_inputs(given: str | int, fps: float | None = None) -> list[Source]:
    """The sources of ``input=``: a video file; a folder of frames; a folder of videos and / or frame folders (each
    one source, natural order); a camera index (``0``); a stream URL (``rtsp://``, ``http://``, ...)."""
    text = str(given)
    if isinstance(given, int) or text.isdigit():
        return [_live(int(text))]
    if "://" in text:
        return [_live(text)]
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"input={text}: no such file or folder (give a video, a frame folder, a folder of videos, a "
                        "camera index or a stream URL)")  # fmt: skip
    rate = DEFAULT_FPS if fps is None else float(fps)
    if path.is_file():
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise DataError(f"input={path}: not a video file ({', '.join(VIDEO_EXTENSIONS)}) nor a folder")
        return [_video_file(path)]
    if list_images(path):
        return [_image_folder(path, rate)]
    sources = [_video_file(p) for p in list_videos(path)]
    sources += [_image_folder(d, rate) for d in list_dirs(path) if list_images(d)]
    if not sources:
        raise DataError(
            f"input={path}: holds no video ({', '.join(VIDEO_EXTENSIONS)}), no frames "
            f"({', '.join(IMAGE_EXTENSIONS)}) and no folder of frames"
        )
    names = [s.name for s in sources]
    if len(set(names)) < len(names):
        raise DataError(f"input={path}: two inputs share a name ({names}); rename one")
    return sources


@dataclass
class Frame:
    """One decoded input frame: its index in the input, its time (s), and when it was decoded."""

    index: int
    time: float
    data: np.ndarray  # (C, H, W) uint8 at the working size
    captured: float  # perf_counter when decoded


#: what the reader puts after an input's last frame
END = object()


def read_frames(source: Source, spec: InputSpec, out: queue.Queue, stop: threading.Event) -> None:
    """Decode, convert and resize every frame of ``source`` to ``spec``'s channels and size into ``out`` (as
    :class:`Frame`); then :data:`END` (or the exception). The body of the reader thread."""
    try:
        start = time.perf_counter()
        for index, raw in enumerate(source.frames()):
            if stop.is_set():
                break
            now = time.perf_counter()
            frame = resize(
                _to_channels(raw, spec.channels, Path(source.origin)), spec.size, spec.interpolation
            ).transpose(2, 0, 1)
            stamp = now - start if source.live else index / source.fps
            while not stop.is_set():
                try:
                    out.put(Frame(index, stamp, np.ascontiguousarray(frame), now), timeout=0.1)
                    break
                except queue.Full:
                    continue
        out.put(END)
    except BaseException as error:  # handed to the main thread, which raises it after flushing
        out.put(error)
