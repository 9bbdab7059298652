"""The in-memory index of a dataset: videos, their ordered frame sources, labels and pixel masks.

Every reader (FFP layout, official raw downloads, generic folders, single video files) produces a
:class:`DatasetIndex`; everything downstream (frame cache, clip datasets, scoring) consumes only this. The folder
listing rules the readers share (natural order, hidden files ignored) and :func:`iter_frames`, which decodes a
source's frames with :mod:`vad.data.frames`, are here too.

    index = open_dataset("ped2", "data/ped2")          # see vad.data.layout
    index.test[0].name, index.test[0].num_frames, index.test[0].labels[:5]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vad.data.frames import count_video_frames, iter_video, read_image
from vad.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".webm", ".wmv")

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically: ``2.jpg`` before ``10.jpg``."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(name))


def is_hidden(path: Path) -> bool:
    """True for dot-files, including the macOS ``._*`` resource forks shipped inside the UCSD archive."""
    return path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` in natural order, hidden files and ``._*`` forks ignored."""
    files = [p for p in folder.iterdir() if p.is_file() and not is_hidden(p) and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


def list_dirs(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` in natural order, hidden ones ignored."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not is_hidden(p)), key=lambda p: natural_key(p.name))


def list_videos(folder: Path) -> list[Path]:
    """Video files of ``folder`` in natural order, hidden files ignored."""
    files = [p for p in folder.iterdir() if p.is_file() and not is_hidden(p) and p.suffix.lower() in VIDEO_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


@dataclass(frozen=True)
class FrameSource:
    """Where a video's frames come from: an ordered tuple of image files, or one video file.

    Frames are addressed by position (0-based) in this order, never by parsing file names.
    """

    images: tuple[Path, ...] = ()
    video: Path | None = None

    def __post_init__(self) -> None:
        if bool(self.images) == (self.video is not None):
            raise ValueError("FrameSource needs either images or a video file, not both or neither")

    @classmethod
    def from_folder(cls, folder: Path) -> FrameSource:
        return cls(images=tuple(list_images(folder)))

    @property
    def location(self) -> Path:
        """The folder of the images, or the video file: what to name in messages."""
        return self.images[0].parent if self.images else self.video  # type: ignore[return-value]

    def signature(self) -> str:
        """A string that changes whenever the source's content may have changed (names, sizes, mtimes)."""
        files: Iterable[Path] = self.images if self.images else (self.video,)  # type: ignore[assignment]
        parts = []
        for p in files:
            st = p.stat()
            parts.append(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
        return "\n".join(parts)


@dataclass(frozen=True)
class MaskSource:
    """Per-pixel anomaly masks of a test video (1 = anomalous), in one of the shipped formats.

    ``images``: one mask image per frame (UCSD ``TestNNN_gt/*.bmp``); ``npy``: one (N, H, W) array
    (ShanghaiTech ``test_pixel_mask``); ``mat``: a ``volLabel`` cell of per-frame masks (Avenue).
    """

    images: tuple[Path, ...] = ()
    npy: Path | None = None
    mat: Path | None = None


@dataclass
class Video:
    """One video of a dataset.

    ``labels``: per-frame anomaly labels, shape (num_frames,), uint8 0 = normal / 1 = anomalous, or None when the
    video has no frame labels (training videos, unlabelled footage). ``masks``: optional pixel masks.
    """

    name: str
    source: FrameSource
    labels: np.ndarray | None = None
    masks: MaskSource | None = None
    _num_frames: int | None = field(default=None, repr=False, compare=False)

    @property
    def num_frames(self) -> int:
        if self._num_frames is None:
            if self.source.images:
                self._num_frames = len(self.source.images)
            else:
                self._num_frames = count_video_frames(self.source.video)  # type: ignore[arg-type]
        return self._num_frames


def frames_video(name: str, folder: Path) -> Video:
    """A Video of the image files of ``folder``; a folder without frames raises DataError naming it."""
    images = list_images(folder)
    if not images:
        raise DataError(
            f"{folder}: video folder holds no frames ({', '.join(IMAGE_EXTENSIONS)}); add its frames or remove it"
        )
    return Video(name=name, source=FrameSource(images=tuple(images)))


def iter_frames(source: FrameSource, channels: int) -> Iterator[np.ndarray]:
    """Decode all frames of a source in order, as (H, W, channels) uint8 arrays (sizes may differ per frame)."""
    if source.images:
        for path in source.images:
            yield read_image(path, channels)
    else:
        yield from iter_video(source.video, channels)  # type: ignore[arg-type]


@dataclass
class DatasetIndex:
    """A dataset indexed into training and test videos.

    ``label_source`` says where the test labels came from (e.g. ``"ped2.mat (FFP gt ranges)"``); it is recorded
    with every result. ``layout`` names the reader that produced the index.
    """

    name: str
    root: Path
    train: list[Video]
    test: list[Video]
    label_source: str | None = None
    layout: str = "ffp"

    @property
    def has_labels(self) -> bool:
        return bool(self.test) and all(v.labels is not None for v in self.test)
