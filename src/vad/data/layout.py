"""Dataset readers: the FFP layout, generic folders, single video files, and ``open_dataset`` that picks one.

The FFP layout (what ``python -m vad.prepare`` writes, and what most published copies use)::

    <root>/
      training/frames/<video>/<frame>.jpg        e.g. training/frames/01/000.jpg (also png, tif, bmp)
      testing/frames/<video>/<frame>.jpg
      testing/labels/<video>.npy                 frame labels (0/1), or any one of:
      testing/test_frame_mask/<video>.npy          ShanghaiTech per-video frame labels
      <name>.mat                                   FFP gt ranges (e.g. ped2.mat)
      frame_labels_<name>.npy                      MNAD labels of all test frames
      testing/test_pixel_mask/<video>.npy        optional pixel masks, or testing/masks/<video>/<frame>.png

A generic folder (``layout=folder``): the FFP layout when present, else videos and/or frame folders::

    <root>/<video>.avi  <root>/<video>/<frame>.jpg               all training footage, or
    <root>/training/<video>.avi  <root>/training/<video>/*.jpg
    <root>/testing/<video>.avi   <root>/testing/<video>/*.jpg     labels as in the FFP layout

Frames and videos are ordered by natural sort (``2.jpg`` before ``10.jpg``) and indexed by position; dot files and
macOS ``._*`` forks are ignored. The official downloads (UCSD, Avenue, ShanghaiTech) are read by ``vad.data.raw``.

    index = open_dataset("ped2", "data/ped2")                        # layout and labels detected
    index.test[0].name, index.test[0].num_frames, index.label_source  # "01", 180, "ped2.mat (FFP gt ranges)"
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import scipy.io

from vad.data import raw
from vad.data.catalog import KNOWN_DATASETS, missing_root_error
from vad.data.index import (
    VIDEO_EXTENSIONS,
    DatasetIndex,
    FrameSource,
    MaskSource,
    Video,
    frames_video,
    is_hidden,
    list_dirs,
    list_images,
    list_videos,
    natural_key,
)
from vad.data.labels import LabelsArg, attach_labels, is_auto
from vad.errors import DataError

LAYOUTS = ("auto", "ffp", "ucsd", "avenue", "shanghaitech", "folder", "video")

FFP_TREE = """<root>/
  training/frames/<video>/<frame>.jpg      e.g. training/frames/01/000.jpg
  testing/frames/<video>/<frame>.jpg
  testing/labels/<video>.npy               frame labels (or <name>.mat FFP ranges, frame_labels_<name>.npy)"""

FOLDER_TREE = """<root>/<video>.avi or <root>/<video>/<frame>.jpg          all training, or
<root>/training/<video>.avi or <root>/training/<video>/*.jpg
<root>/testing/<video>.avi or <root>/testing/<video>/*.jpg    labels: testing/labels/<video>.npy"""

# Folders of a testing/ split that hold labels or masks, never videos.
_NON_VIDEO_FOLDERS = {"frames", "labels", "masks", "test_frame_mask", "test_pixel_mask"}


def frame_folders(folder: Path) -> list[Video]:
    """One Video per sub-folder of ``folder`` (``training/frames``), in natural order."""
    return [frames_video(sub.name, sub) for sub in list_dirs(folder)]


def _gt_mat_files(root: Path) -> list[Path]:
    found = []
    for path in sorted(root.glob("*.mat"), key=lambda p: natural_key(p.name)):
        if is_hidden(path):
            continue
        try:
            names = [n for n, _, _ in scipy.io.whosmat(str(path))]
        except (ValueError, OSError, NotImplementedError):
            continue
        if "gt" in names:
            found.append(path)
    return found


def find_label_source(root: Path, name: str) -> Path | None:
    """The label source of an FFP-layout root, first found of: testing/labels/, testing/test_frame_mask/,
    ``<name>.mat``, the only ``*.mat`` with a ``gt`` variable, ``frame_labels_<name>.npy``; None when there is none.
    """
    for folder in (root / "testing" / "labels", root / "testing" / "test_frame_mask"):
        if folder.is_dir() and any(not is_hidden(p) for p in folder.glob("*.npy")):
            return folder
    stems = KNOWN_DATASETS[name].label_names if name in KNOWN_DATASETS else ()
    stems = (*stems, name) if name not in stems else stems
    for stem in stems:
        if (root / f"{stem}.mat").is_file():
            return root / f"{stem}.mat"
    mats = _gt_mat_files(root)
    if len(mats) > 1:
        raise DataError(
            f"{root}: several label files with a gt variable ({', '.join(p.name for p in mats)}); "
            "choose one with labels=<file>"
        )
    if mats:
        return mats[0]
    for stem in stems:
        if (root / f"frame_labels_{stem}.npy").is_file():
            return root / f"frame_labels_{stem}.npy"
    return None


def attach_masks(root: Path, videos: Sequence[Video]) -> None:
    """Pixel masks of an FFP-layout test set: ``testing/test_pixel_mask/<video>.npy`` or ``testing/masks/<video>/``."""
    for video in videos:
        npy = root / "testing" / "test_pixel_mask" / f"{video.name}.npy"
        folder = root / "testing" / "masks" / video.name
        if npy.is_file():
            video.masks = MaskSource(npy=npy)
        elif folder.is_dir():
            video.masks = MaskSource(images=tuple(list_images(folder)))


def is_ffp(root: Path) -> bool:
    return (root / "training" / "frames").is_dir() or (root / "testing" / "frames").is_dir()


def open_ffp(root: str | Path, name: str, labels: LabelsArg = "auto") -> DatasetIndex:
    """Index a dataset in the FFP layout (see the module docstring); a missing split gives an empty list."""
    root = Path(root)
    if not root.is_dir():
        raise missing_root_error(name, root, FFP_TREE)
    if not is_ffp(root):
        raise DataError(f"{root}: not in the FFP layout (no training/frames or testing/frames). Expected:\n{FFP_TREE}")
    splits = {}
    for split in ("training", "testing"):
        folder = root / split / "frames"
        splits[split] = frame_folders(folder) if folder.is_dir() else []
        if folder.is_dir() and not splits[split]:
            raise DataError(f"{folder}: no video folders inside; expected {split}/frames/<video>/<frame>.jpg")
    index = DatasetIndex(name=name, root=root, train=splits["training"], test=splits["testing"], layout="ffp")
    attach_labels(index, labels, find_label_source(root, name) if is_auto(labels) else None)
    attach_masks(root, index.test)
    return index


def videos_in(folder: Path, reserved: frozenset[str] = frozenset()) -> list[Video]:
    """The videos of a folder: video files and frame sub-folders (``reserved`` names skipped), natural order."""
    videos = [Video(name=p.stem, source=FrameSource(video=p)) for p in list_videos(folder)]
    videos += [frames_video(sub.name, sub) for sub in list_dirs(folder) if sub.name not in reserved]
    names = [v.name for v in videos]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise DataError(f"{folder}: {', '.join(clashes)} is both a video file and a frame folder; keep one of them")
    return sorted(videos, key=lambda v: natural_key(v.name))


def open_folder(root: str | Path, name: str = "folder", labels: LabelsArg = "auto") -> DatasetIndex:
    """Index a generic folder (see the module docstring); the FFP layout is used when present."""
    root = Path(root)
    if not root.is_dir():
        raise missing_root_error(name, root, FOLDER_TREE)
    if is_ffp(root):
        index = open_ffp(root, name, labels)
        index.layout = "folder"
        return index
    training, testing = root / "training", root / "testing"
    if training.is_dir() or testing.is_dir():
        train = videos_in(training) if training.is_dir() else []
        test = videos_in(testing, frozenset(_NON_VIDEO_FOLDERS)) if testing.is_dir() else []
    else:
        train, test = videos_in(root), []
    if not train and not test:
        raise DataError(
            f"{root}: no videos ({', '.join(VIDEO_EXTENSIONS)}) or frame folders found. Expected:\n{FOLDER_TREE}"
        )
    index = DatasetIndex(name=name, root=root, train=train, test=test, layout="folder")
    attach_labels(index, labels, find_label_source(root, name) if is_auto(labels) else None)
    attach_masks(root, index.test)
    return index


def open_video_file(path: str | Path) -> DatasetIndex:
    """One video file as an unlabelled test set (for scoring footage); frames are counted lazily."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise DataError(f"{path}: not a video file ({', '.join(VIDEO_EXTENSIONS)}); convert it or pass its folder")
    video = Video(name=path.stem, source=FrameSource(video=path))
    return DatasetIndex(name=path.stem, root=path.parent, train=[], test=[video], layout="video")


def detect_layout(root: Path) -> str:
    """The layout of ``root``: video, shanghaitech, ffp, ucsd, avenue or folder (checked in that order)."""
    if root.is_file():
        return "video"
    for base in (root, root / "shanghaitech"):
        if (base / "training" / "videos").is_dir() and not (base / "training" / "frames").is_dir():
            return "shanghaitech"
    if is_ffp(root):
        return "ffp"
    if (root / "Train").is_dir() or (root / "Test").is_dir() or any(root.glob("UCSDped[12]")):
        return "ucsd"
    if (root / "training_videos").is_dir() or (root / "testing_videos").is_dir():
        return "avenue"
    return "folder"


def open_dataset(name: str, root: str | Path, layout: str = "auto", labels: LabelsArg = "auto") -> DatasetIndex:
    """Index dataset ``name`` found at ``root``.

    ``name`` is a key of :data:`KNOWN_DATASETS` or, for your own footage, any label for the run (read like
    ``folder``: the layout is detected from the files).

    ``layout``: one of :data:`LAYOUTS` (``auto`` detects it from the files); ``labels``: ``"auto"``, a label file or
    folder, or None for an unlabelled test set.
    """
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    root = Path(root).expanduser()
    if not root.exists():
        raise missing_root_error(name, root, FFP_TREE if name in KNOWN_DATASETS and name != "folder" else FOLDER_TREE)
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "video":
        return open_video_file(root)
    if layout == "ffp":
        return open_ffp(root, name, labels)
    if layout == "folder":
        return open_folder(root, name, labels)
    if layout == "ucsd":
        return raw.open_ucsd(root, name, labels)
    if layout == "avenue":
        return raw.open_avenue(root, name, labels)
    return raw.open_shanghaitech(root, name, labels)
