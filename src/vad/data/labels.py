"""Frame-label and pixel-mask parsers for every ground-truth format in circulation.

Frame labels come out as one uint8 array of 0/1 per test video (1 = anomalous), keyed by video name, for the videos
of the ``videos`` mapping the caller passes (name -> number of frames, in sorted video order)::

    FFP .mat        <name>.mat, variable gt: 1xK cell of 2xR [start; end] arrays, 1-indexed inclusive, one per video
    MNAD .npy       frame_labels_<name>.npy: one (1, N) or (N,) array of all test frames in sorted video order
    per-video .npy  testing/labels/<video>.npy, ShanghaiTech testing/test_frame_mask/<video>.npy: 0/1 arrays
    UCSD .m         Test/UCSDped2.m: TestVideoFile{end+1}.gt_frame = [5:90, 140:200];  one line per test video
    Avenue masks    testing_label_mask/<N>_label.mat, volLabel: 1xF cell of HxW masks (frame label = any pixel set)

    videos = {v.name: v.num_frames for v in index.test}
    labels, source = read_frame_labels(Path("data/ped2/ped2.mat"), videos)   # {"01": (180,) uint8, ...}

The readers hand a dataset's ``labels`` argument (:data:`LabelsArg`) to :func:`attach_labels`, which reads the file
it names (or the reader's default for ``"auto"``) into the index's test videos.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import scipy.io

from vad.data.frames import read_image
from vad.data.index import DatasetIndex, MaskSource, list_images
from vad.errors import DataError

Labels = dict[str, np.ndarray]

LabelsArg = str | Path | None
"""``"auto"`` (look for the known label files), a path to a label file or folder, or None (unlabelled)."""

PREPARED_MANIFEST = "prepare.json"
"""The manifest ``vad.prepare`` writes into a prepared folder; its ``label_source`` is named with the labels."""

_GT_FRAME = re.compile(r"gt_frame\s*=\s*\[([^\]]*)\]")
_RANGE = re.compile(r"^(\d+)(?::(\d+))?$")


def ranges_to_labels(ranges: Iterable[tuple[int, int]], n: int) -> np.ndarray:
    """(n,) uint8 labels with 1 inside each ``(start, end)`` range (1-indexed, inclusive).

    A range outside frames 1..n raises ValueError (callers add the file and video to the message).
    """
    labels = np.zeros(n, dtype=np.uint8)
    for start, end in ranges:
        start, end = int(start), int(end)
        if not 1 <= start <= end <= n:
            raise ValueError(f"range {start}-{end} is outside frames 1-{n}")
        labels[start - 1 : end] = 1
    return labels


def labels_to_ranges(labels: np.ndarray) -> list[tuple[int, int]]:
    """The runs of 1s in a (N,) 0/1 array as ``(start, end)`` pairs, 1-indexed inclusive."""
    flags = np.concatenate([[0], np.asarray(labels).reshape(-1) != 0, [0]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(flags))
    return [(int(s) + 1, int(e)) for s, e in zip(edges[::2], edges[1::2], strict=True)]


def _counts(videos: Mapping[str, int]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in videos.items())


def _check_binary(values: np.ndarray, origin: str) -> np.ndarray:
    if values.size and not np.isin(values, (0, 1)).all():
        found = np.unique(values)[:6].tolist()
        raise DataError(f"{origin}: frame labels must be 0 (normal) or 1 (anomalous), found values {found}")
    return values.astype(np.uint8)


def _loadmat(path: Path, variable: str) -> np.ndarray:
    try:
        content = scipy.io.loadmat(str(path), variable_names=[variable])
    except NotImplementedError as err:  # MATLAB v7.3 files are HDF5, which scipy does not read
        raise DataError(f"{path}: MATLAB v7.3 file; re-save it in MATLAB with save(..., '-v7')") from err
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable MATLAB .mat file ({err})") from err
    if variable not in content:
        found = [n for n, _, _ in scipy.io.whosmat(str(path))]
        raise DataError(f"{path}: no variable {variable!r} in this .mat file (it holds {found})")
    return content[variable]


def _gt_ranges(entry: np.ndarray, path: Path, video: str) -> list[tuple[int, int]]:
    """One FFP ``gt`` cell entry (2xR [start; end]) as int64 ranges; uint8 values would overflow in arithmetic."""
    array = np.asarray(entry).astype(np.int64)
    if array.size == 0:
        return []
    if array.ndim == 1 and array.size == 2:
        array = array.reshape(2, 1)
    if array.ndim != 2 or array.shape[0] != 2:
        raise DataError(f"{path}: gt entry of video {video} has shape {array.shape}; expected 2xR [start; end] rows")
    return [(int(s), int(e)) for s, e in array.T]


def read_ffp_mat(path: Path, videos: Mapping[str, int]) -> Labels:
    """Labels from an FFP ``.mat`` (variable ``gt``: one 2xR [start; end] array per test video, in sorted order)."""
    cell = _loadmat(path, "gt")
    entries = list(cell.reshape(-1)) if cell.dtype == object else [cell]
    if len(entries) != len(videos):
        raise DataError(
            f"{path}: {len(entries)} label entries (gt) but {len(videos)} test videos; "
            "use the label file of this dataset and its complete test set"
        )
    labels: Labels = {}
    for (video, n), entry in zip(videos.items(), entries, strict=True):
        ranges = _gt_ranges(entry, path, video)
        try:
            labels[video] = ranges_to_labels(ranges, n)
        except ValueError as err:
            raise DataError(f"{path}: video {video} has {n} frames but its label {err}; wrong label file?") from err
    return labels


def read_mnad_npy(path: Path, videos: Mapping[str, int]) -> Labels:
    """Labels from one MNAD ``.npy`` of all test frames, shape (1, N) or (N,), split by the videos' lengths."""
    try:
        values = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable .npy array ({err})") from err
    if values.ndim == 2 and 1 in values.shape:
        values = values.reshape(-1)
    if values.ndim != 1:
        raise DataError(f"{path}: frame labels have shape {values.shape}; expected (1, N) or (N,)")
    total = sum(videos.values())
    if values.size != total:
        raise DataError(
            f"{path}: {values.size} frame labels but the {len(videos)} test videos hold {total} frames "
            f"({_counts(videos)}); use the label file of this dataset and its complete test set"
        )
    values = _check_binary(values, str(path))
    bounds = np.cumsum([0, *videos.values()])
    return {video: values[bounds[i] : bounds[i + 1]].copy() for i, video in enumerate(videos)}


def read_video_npys(folder: Path, videos: Mapping[str, int]) -> Labels:
    """Labels from per-video ``<folder>/<video>.npy`` 0/1 arrays (testing/labels, test_frame_mask)."""
    missing = [video for video in videos if not (folder / f"{video}.npy").is_file()]
    if missing:
        raise DataError(
            f"{folder}: no label file for test video(s) {', '.join(missing)} (expected {folder}/<video>.npy "
            f"for each of the {len(videos)} test videos); add them or pass another label source with labels=..."
        )
    labels: Labels = {}
    wrong = []
    for video, n in videos.items():
        path = folder / f"{video}.npy"
        try:
            values = np.load(path, allow_pickle=False).reshape(-1)
        except (ValueError, OSError) as err:
            raise DataError(f"{path}: not a readable .npy array ({err})") from err
        if values.size != n:
            wrong.append(f"{video}: {values.size} labels vs {n} frames")
        labels[video] = _check_binary(values, str(path))
    if wrong:
        raise DataError(f"{folder}: label lengths differ from frame counts ({', '.join(wrong)}); regenerate them")
    return labels


def parse_ucsd_m(path: Path) -> list[list[tuple[int, int]]]:
    """The ``gt_frame`` ranges of a UCSD ``UCSDped{1,2}.m``, one list of (start, end) per test video (1-indexed)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise DataError(f"{path}: cannot read the UCSD label file ({err})") from err
    videos = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _GT_FRAME.search(line.split("%", 1)[0])
        if match is None:
            continue
        ranges = []
        body = re.sub(r"\s*:\s*", ":", match.group(1))
        for item in filter(None, re.split(r"[,;\s]+", body)):
            parsed = _RANGE.match(item)
            if parsed is None:
                raise DataError(f"{path}:{number}: cannot parse {item!r}; expected ranges like [5:90, 140:200]")
            start = int(parsed.group(1))
            ranges.append((start, int(parsed.group(2) or start)))
        videos.append(ranges)
    if not videos:
        raise DataError(f"{path}: no 'TestVideoFile{{end+1}}.gt_frame = [...]' lines; is this a UCSD label file?")
    return videos


def read_ucsd_m(path: Path, videos: Mapping[str, int]) -> Labels:
    """Labels from a UCSD ``.m`` file, its lines matched to the test videos in sorted order."""
    per_video = parse_ucsd_m(path)
    if len(per_video) != len(videos):
        raise DataError(
            f"{path}: {len(per_video)} gt_frame lines but {len(videos)} test videos; "
            "use the .m file of this dataset and its complete Test folder"
        )
    labels: Labels = {}
    for (video, n), ranges in zip(videos.items(), per_video, strict=True):
        try:
            labels[video] = ranges_to_labels(ranges, n)
        except ValueError as err:
            raise DataError(f"{path}: video {video} has {n} frames but its label {err}; wrong label file?") from err
    return labels


def avenue_mask_file(folder: Path, video: str) -> Path | None:
    """The ``<N>_label.mat`` of an Avenue test video (``01`` -> ``1_label.mat``), or None when absent."""
    names = [f"{video}_label.mat"]
    if video.isdigit():
        names.insert(0, f"{int(video)}_label.mat")
    return next((folder / name for name in names if (folder / name).is_file()), None)


def _vol_label(path: Path) -> list[np.ndarray]:
    cell = _loadmat(path, "volLabel")
    if cell.dtype != object:
        raise DataError(f"{path}: volLabel is a {cell.dtype} array of shape {cell.shape}; expected a cell of masks")
    return list(cell.reshape(-1))


def read_avenue_masks(folder: Path, videos: Mapping[str, int]) -> Labels:
    """Frame labels derived from Avenue's ``volLabel`` pixel masks: a frame is anomalous when any pixel is set."""
    labels: Labels = {}
    for video, n in videos.items():
        path = avenue_mask_file(folder, video)
        if path is None:
            raise DataError(f"{folder}: no mask file for test video {video} (expected {folder}/{int(video)}_label.mat)")
        masks = _vol_label(path)
        if len(masks) != n:
            raise DataError(f"{path}: {len(masks)} masks (volLabel) but video {video} has {n} frames")
        labels[video] = np.array([np.any(np.asarray(m)) for m in masks], dtype=np.uint8)
    return labels


def read_frame_labels(path: Path, videos: Mapping[str, int]) -> tuple[Labels, str]:
    """Labels from any supported source, told apart by its form; returns the labels and a description of the source.

    ``path``: an FFP ``.mat``, an MNAD ``.npy``, a UCSD ``.m``, or a folder of per-video ``.npy`` files.
    """
    if path.is_dir():
        return read_video_npys(path, videos), f"{path.parent.name}/{path.name} (per-video .npy)"
    if not path.is_file():
        raise DataError(f"{path}: label file not found; pass labels=<.mat | .npy | .m | folder of <video>.npy>")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        return read_ffp_mat(path, videos), f"{path.name} (FFP gt ranges)"
    if suffix == ".npy":
        return read_mnad_npy(path, videos), f"{path.name} (MNAD frame labels)"
    if suffix == ".m":
        return read_ucsd_m(path, videos), f"{path.name} (UCSD gt_frame ranges)"
    raise DataError(f"{path}: unknown label format {suffix!r}; use an FFP .mat, an MNAD .npy, a UCSD .m or a folder")


def iter_masks(masks: MaskSource) -> Iterator[np.ndarray]:
    """The pixel masks of a video one frame at a time, each (H, W) bool (True = anomalous)."""
    if masks.images:
        for path in masks.images:
            yield read_image(path, channels=1)[:, :, 0] > 0
    elif masks.npy is not None:
        try:
            volume = np.load(masks.npy, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise DataError(f"{masks.npy}: not a readable .npy array ({err})") from err
        if volume.ndim == 4 and volume.shape[-1] == 1:
            volume = volume[..., 0]
        if volume.ndim != 3:
            raise DataError(f"{masks.npy}: pixel masks have shape {volume.shape}; expected (N, H, W)")
        for frame in volume:
            yield np.asarray(frame) > 0
    elif masks.mat is not None:
        for frame in _vol_label(masks.mat):
            yield np.asarray(frame) > 0
    else:
        raise ValueError("MaskSource holds no masks")


def mask_location(masks: MaskSource) -> Path:
    """The mask folder or file of a MaskSource: what to name in messages."""
    return masks.images[0].parent if masks.images else masks.npy or masks.mat  # type: ignore[return-value]


def load_masks(masks: MaskSource, num_frames: int) -> np.ndarray:
    """All pixel masks of a video as (N, H, W) bool; N must equal the video's ``num_frames``."""
    frames = list(iter_masks(masks))
    origin = mask_location(masks)
    if len(frames) != num_frames:
        raise DataError(f"{origin}: {len(frames)} pixel masks but the video has {num_frames} frames")
    if len({f.shape for f in frames}) > 1:
        raise DataError(f"{origin}: pixel masks of different sizes {sorted({f.shape for f in frames})}")
    return np.stack(frames) if frames else np.zeros((0, 0, 0), dtype=bool)


def mask_images(folder: Path) -> MaskSource:
    """A MaskSource of the mask images of ``folder`` (UCSD ``TestNNN_gt``), natural order, ``._*`` forks ignored."""
    return MaskSource(images=tuple(list_images(folder)))


def is_auto(labels: LabelsArg) -> bool:
    return isinstance(labels, str) and labels == "auto"


def _resolve_labels_path(labels: str | Path, root: Path) -> Path:
    path = Path(labels).expanduser()
    if path.exists() or path.is_absolute():
        return path
    return root / path if (root / path).exists() else path


def _prepared_from(root: Path) -> str | None:
    """The label source recorded by ``vad.prepare`` in the manifest of a prepared folder."""
    manifest = root / PREPARED_MANIFEST
    if not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text()).get("label_source")
    except (ValueError, OSError):
        return None


def attach_labels(index: DatasetIndex, labels: LabelsArg, default: Path | None = None) -> None:
    """Set ``labels`` and ``label_source`` of the index's test videos from ``labels`` (see :data:`LabelsArg`).

    ``default``: the source ``"auto"`` stands for (None: leave the test set unlabelled).
    """
    if labels is None or not index.test:
        return
    if is_auto(labels):
        if default is None:
            return
        path = default
    else:
        path = _resolve_labels_path(labels, index.root)
    videos = {v.name: v.num_frames for v in index.test}
    per_video, source = read_frame_labels(path, videos)
    for video in index.test:
        video.labels = per_video[video.name]
    if path == index.root / "testing" / "labels":
        prepared = _prepared_from(index.root)
        source = f"{source}; prepared from {prepared}" if prepared else source
    index.label_source = source
