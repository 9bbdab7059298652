"""The frame cache: every video decoded once, resized to the working size and stored as a uint8 array on disk.

Clip datasets slice these arrays through read-only memory maps, so loader workers never decode an image.

    <cache_dir>/<dataset_name>/<H>x<W>-c<C>-<interpolation>/
        <video>-<key12>.npy        uint8 (N, C, H, W), planar; channels R, G, B for C = 3

Frames are stored planar (channels first) because that is the layout of the clips the models take: a clip slice
``array[start:stop]`` is already (T, C, H, W), so turning it into float needs no transposition.

``dataset_name`` is a folder in which video names are unique, such as ``ped2/training`` (training and test videos
of a dataset share names like ``01``, so they need one folder each).

``key12`` is a hash of the video's :meth:`FrameSource.signature` (file names, sizes, mtimes), the working size, the
channel count, the interpolation and :data:`FORMAT_VERSION`: touching a frame gives a new key and a rebuild, and the
stale file of that video is removed. Each working format has its own folder, so caches at two sizes coexist.

    cache = FrameCache(".cache/frames", image_size=(256, 256), channels=3)
    cache.build(index.test, "ped2/testing"); frames = cache.load(index.test[0], "ped2/testing")  # (N, C, H, W)
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vad.data.frames import INTERPOLATIONS, resize
from vad.data.index import FrameSource, Video, iter_frames
from vad.errors import DataError

# Bump when the stored content changes meaning (layout, colour order, resizing method, dtype): every entry is rebuilt.
# 2: planar (N, C, H, W) instead of channels-last (N, H, W, C).
FORMAT_VERSION = 2


class FrameCache:
    """Decoded, resized uint8 frames of whole videos, one planar (N, C, H, W) ``.npy`` per video, read through
    memory maps.

    ``image_size`` = (height, width) of the stored frames; ``channels`` 1 (grey) or 3 (RGB); ``interpolation`` one of
    ``nearest``, ``linear``, ``area``, ``cubic`` (OpenCV's). Holds no open files, so it pickles cheaply.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        image_size: tuple[int, int] = (256, 256),
        channels: int = 3,
        interpolation: str = "linear",
    ) -> None:
        height, width = (int(s) for s in image_size)
        if height < 1 or width < 1:
            raise ValueError(f"image_size must be two positive integers (height, width), got {tuple(image_size)}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
        self.cache_dir = Path(cache_dir)
        self.image_size = (height, width)
        self.channels = channels
        self.interpolation = interpolation
        # Entries checked by build() in this process: the datasets asking for them next need not stat every frame
        # again (that costs seconds on ShanghaiTech). Holding the source object keeps the identity check sound.
        self._known: dict[tuple[str, str], tuple[FrameSource, Path]] = {}

    @property
    def format_dir(self) -> str:
        """The sub-folder name of this working format, e.g. ``256x256-c3-linear``."""
        return f"{self.image_size[0]}x{self.image_size[1]}-c{self.channels}-{self.interpolation}"

    def key(self, video: Video) -> str:
        """12 hex digits identifying the source content and the working format."""
        h, w = self.image_size
        text = f"v{FORMAT_VERSION}\n{h}x{w}\nc{self.channels}\n{self.interpolation}\n{video.source.signature()}"
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def path(self, video: Video, dataset_name: str) -> Path:
        """Where the cached array of ``video`` lies (whether built or not)."""
        known = self._known.get((dataset_name, video.name))
        if known is not None and known[0] is video.source:
            return known[1]
        return self._folder(dataset_name) / f"{video.name}-{self.key(video)}.npy"

    def build(self, videos: Sequence[Video], dataset_name: str, progress: bool = True) -> list[str]:
        """Decode the videos that have no up-to-date entry; returns the names of those decoded (in order).

        Safe to call from several processes at once: each writes a private temporary file and renames it into place.
        """
        repeated = sorted(name for name, n in Counter(v.name for v in videos).items() if n > 1)
        if repeated:
            raise ValueError(f"video names must be unique within {dataset_name!r}; repeated: {', '.join(repeated)}")
        todo = []
        for video in videos:
            target = self._folder(dataset_name) / f"{video.name}-{self.key(video)}.npy"
            self._known[(dataset_name, video.name)] = (video.source, target)
            if not target.is_file():
                todo.append((video, target))
        if not todo:
            return []
        total = sum(video.num_frames for video, _ in todo)
        desc = f"caching {dataset_name} frames at {self.format_dir}"
        with tqdm(total=total, desc=desc, unit="frame", disable=not progress, dynamic_ncols=True) as bar:
            for video, target in todo:
                bar.set_postfix_str(video.name, refresh=False)
                self._write(video, target, bar)
                remove_stale(target, video.name)
        return [video.name for video, _ in todo]

    def load(self, video: Video, dataset_name: str) -> np.ndarray:
        """The cached frames of ``video``: a read-only memmap uint8 (N, C, H, W). Raises DataError if not built."""
        return open_frames(self.path(video, dataset_name), video.name)

    def _folder(self, dataset_name: str) -> Path:
        return self.cache_dir / dataset_name / self.format_dir

    def _write(self, video: Video, target: Path, bar: tqdm) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        count = video.num_frames
        h, w = self.image_size
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(count, self.channels, h, w))
            first_shape = None
            warned = False
            n = 0
            for frame in iter_frames(video.source, self.channels):
                if n >= count:
                    raise DataError(f"{video.source.location}: more frames decoded than counted ({count}); re-encode")
                if first_shape is None:
                    first_shape = frame.shape[:2]
                elif frame.shape[:2] != first_shape and not warned:
                    warnings.warn(
                        f"video '{video.name}' ({video.source.location}) has frames of different sizes "
                        f"({first_shape[0]}x{first_shape[1]} and {frame.shape[0]}x{frame.shape[1]}); "
                        f"all are resized to {h}x{w}",
                        stacklevel=3,
                    )
                    warned = True
                out[n] = resize(frame, self.image_size, self.interpolation).transpose(2, 0, 1)
                n += 1
                bar.update(1)
            if n != count:
                raise DataError(f"{video.source.location}: decoded {n} frames but counted {count}; re-encode the video")
            out.flush()
            del out
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


def open_frames(path: Path, video_name: str = "") -> np.ndarray:
    """Memory-map one cache entry read-only: uint8 (N, C, H, W)."""
    # Read-only keeps a stray write from reaching the cache; clips are converted out of the map into float buffers
    # and never wrapped by torch.from_numpy, which would warn that the array is not writable.
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise DataError(
            f"{path}: frame cache entry of video '{video_name}' is missing or outdated; "
            "build it first (FrameCache.build, or VideoDataModule.prepare_data)"
        ) from None


def remove_stale(target: Path, video_name: str) -> None:
    """Delete the other ``<video>-<key12>.npy`` entries of the same video in ``target``'s folder (their source, or
    whatever else the key covers, has changed); the frame cache and the flow cache (:mod:`vad.data.flows`) use it."""
    pattern = re.compile(re.escape(video_name) + r"-[0-9a-f]{12}\.npy")
    for other in target.parent.iterdir():
        if other != target and pattern.fullmatch(other.name):
            other.unlink(missing_ok=True)
