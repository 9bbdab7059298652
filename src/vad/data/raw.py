"""Readers of the official downloads of UCSD Ped1/Ped2, CUHK Avenue and ShanghaiTech Campus, as distributed.

``python -m vad.prepare`` converts these into the FFP layout; they can also be indexed directly. Video names follow
the FFP convention (``Test001`` -> ``01``, ``01.avi`` -> ``01``), so both give the same names.

UCSD (``<root>`` = ``UCSDped2`` or the folder holding it; the archive's ``._*`` files are ignored)::

    UCSDped2/
      Train/Train001/001.tif ...
      Test/Test001/001.tif ...
      Test/Test001_gt/001.bmp ...      pixel masks
      Test/UCSDped2.m                  frame ranges

Avenue (frame labels from the masks, or from the FFP/MNAD ranges given with ``labels=``)::

    <root>/
      training_videos/01.avi ...
      testing_videos/01.avi ...
      testing_label_mask/1_label.mat ...   (volLabel pixel masks)

ShanghaiTech::

    <root>/                          (the shanghaitech folder or the one holding it)
      training/videos/01_001.avi ...
      testing/frames/01_0014/000.jpg ...
      testing/test_frame_mask/01_0014.npy ...
      testing/test_pixel_mask/01_0014.npy ...

    index = open_ucsd(Path("downloads/UCSD_Anomaly_Dataset.v1p2"), "ped2")
    index.test[0].name, index.label_source                                # "01", "UCSDped2.m (UCSD gt_frame ranges)"
"""

from __future__ import annotations

import re
from pathlib import Path

from vad.data.catalog import missing_root_error
from vad.data.index import (
    DatasetIndex,
    FrameSource,
    MaskSource,
    Video,
    frames_video,
    is_hidden,
    list_dirs,
    list_videos,
)
from vad.data.labels import LabelsArg, attach_labels, avenue_mask_file, is_auto, mask_images, read_avenue_masks
from vad.errors import DataError

UCSD_TREE = """UCSDped2/                        (or the folder holding it)
  Train/Train001/001.tif ...
  Test/Test001/001.tif ...
  Test/Test001_gt/001.bmp ...      pixel masks
  Test/UCSDped2.m                  frame ranges"""

AVENUE_TREE = """<root>/
  training_videos/01.avi ...
  testing_videos/01.avi ...
  testing_label_mask/1_label.mat ...   (volLabel pixel masks)"""

SHANGHAITECH_TREE = """<root>/                          (the shanghaitech folder or the one holding it)
  training/videos/01_001.avi ...
  testing/frames/01_0014/000.jpg ...
  testing/test_frame_mask/01_0014.npy ...
  testing/test_pixel_mask/01_0014.npy ..."""

_UCSD_VIDEO = re.compile(r"^(Train|Test)(\d+)$", re.IGNORECASE)


def ffp_name(number: str) -> str:
    """The FFP-style name of a numbered video: ``001`` -> ``01`` (at least two digits, as in the FFP copies)."""
    return f"{int(number):02d}"


def _ucsd_dir(root: Path, name: str) -> Path:
    if (root / "Train").is_dir() or (root / "Test").is_dir():
        return root
    candidates = [p for p in list_dirs(root) if re.fullmatch(r"UCSDped[12]", p.name)]
    wanted = {"ped1": "UCSDped1", "ped2": "UCSDped2"}.get(name)
    chosen = [p for p in candidates if p.name == wanted] if wanted else candidates
    if len(chosen) == 1:
        return chosen[0]
    found = ", ".join(p.name for p in candidates) or "none"
    raise DataError(
        f"{root}: cannot tell which UCSD set to read (UCSDped folders found: {found}); use dataset=ped1 or "
        f"dataset=ped2 with the folder holding UCSDped1/UCSDped2. Expected:\n{UCSD_TREE}"
    )


def _ucsd_videos(folder: Path, kind: str) -> list[Video]:
    videos = []
    for sub in list_dirs(folder):
        match = _UCSD_VIDEO.match(sub.name)
        if match and match.group(1).lower() == kind.lower():
            videos.append(frames_video(ffp_name(match.group(2)), sub))
    return videos


def _ucsd_m_file(test: Path, base: Path) -> Path | None:
    preferred = test / f"{base.name}.m"
    if preferred.is_file():
        return preferred
    files = [p for p in sorted(test.glob("*.m")) if not is_hidden(p)]
    return files[0] if len(files) == 1 else None


def open_ucsd(root: Path, name: str, labels: LabelsArg = "auto") -> DatasetIndex:
    """Index the official UCSD Ped1/Ped2 download; labels from ``Test/UCSDpedN.m`` unless ``labels`` says otherwise."""
    if not root.is_dir():
        raise missing_root_error(name, root, UCSD_TREE)
    base = _ucsd_dir(root, name)
    train = _ucsd_videos(base / "Train", "Train") if (base / "Train").is_dir() else []
    test = _ucsd_videos(base / "Test", "Test") if (base / "Test").is_dir() else []
    if not train and not test:
        raise DataError(f"{base}: no TrainNNN / TestNNN frame folders. Expected:\n{UCSD_TREE}")
    for video in test:
        gt = base / "Test" / f"{video.source.location.name}_gt"
        if gt.is_dir():
            video.masks = mask_images(gt)
    index = DatasetIndex(name=name, root=base, train=train, test=test, layout="ucsd")
    default = _ucsd_m_file(base / "Test", base) if test else None
    if test and default is None and is_auto(labels):
        raise DataError(
            f"{base / 'Test'}: no {base.name}.m label file (shipped in the official archive); restore it "
            "or pass labels=<label file>"
        )
    attach_labels(index, labels, default)
    return index


def _video_files(folder: Path) -> list[Video]:
    videos = []
    for path in list_videos(folder):
        name = ffp_name(path.stem) if path.stem.isdigit() else path.stem
        videos.append(Video(name=name, source=FrameSource(video=path)))
    return videos


def open_avenue(root: Path, name: str = "avenue", labels: LabelsArg = "auto") -> DatasetIndex:
    """Index the official Avenue download. ``labels="auto"`` derives frame labels from the volLabel pixel masks;
    pass the FFP/MNAD ranges (``avenue.mat`` / ``frame_labels_avenue.npy``) to get the literature's ground truth.
    Counting frames decodes the test videos once (the labels need their lengths).
    """
    if not root.is_dir():
        raise missing_root_error(name, root, AVENUE_TREE)
    train_dir, test_dir, mask_dir = root / "training_videos", root / "testing_videos", root / "testing_label_mask"
    train = _video_files(train_dir) if train_dir.is_dir() else []
    test = _video_files(test_dir) if test_dir.is_dir() else []
    if not train and not test:
        raise DataError(f"{root}: no training_videos/*.avi or testing_videos/*.avi. Expected:\n{AVENUE_TREE}")
    for video in test:
        mat = avenue_mask_file(mask_dir, video.name) if mask_dir.is_dir() else None
        if mat is not None:
            video.masks = MaskSource(mat=mat)
    index = DatasetIndex(name=name, root=root, train=train, test=test, layout="avenue")
    if is_auto(labels):
        if test and mask_dir.is_dir():
            per_video = read_avenue_masks(mask_dir, {v.name: v.num_frames for v in test})
            for video in test:
                video.labels = per_video[video.name]
            index.label_source = "testing_label_mask volLabel (pixel masks)"
    else:
        attach_labels(index, labels)
    return index


def _shanghaitech_dir(root: Path) -> Path:
    for base in (root, root / "shanghaitech"):
        if (base / "training" / "videos").is_dir() or (base / "testing" / "frames").is_dir():
            return base
    raise DataError(f"{root}: no training/videos or testing/frames folder. Expected:\n{SHANGHAITECH_TREE}")


def open_shanghaitech(root: Path, name: str = "shanghaitech", labels: LabelsArg = "auto") -> DatasetIndex:
    """Index the official ShanghaiTech download; labels from ``testing/test_frame_mask`` unless ``labels`` is given."""
    if not root.is_dir():
        raise missing_root_error(name, root, SHANGHAITECH_TREE)
    base = _shanghaitech_dir(root)
    train_dir, frames_dir = base / "training" / "videos", base / "testing" / "frames"
    train = (
        [Video(name=p.stem, source=FrameSource(video=p)) for p in list_videos(train_dir)] if train_dir.is_dir() else []
    )
    test = [frames_video(sub.name, sub) for sub in list_dirs(frames_dir)] if frames_dir.is_dir() else []
    for video in test:
        npy = base / "testing" / "test_pixel_mask" / f"{video.name}.npy"
        if npy.is_file():
            video.masks = MaskSource(npy=npy)
    index = DatasetIndex(name=name, root=base, train=train, test=test, layout="shanghaitech")
    frame_masks = base / "testing" / "test_frame_mask"
    attach_labels(index, labels, frame_masks if frame_masks.is_dir() else None)
    return index
