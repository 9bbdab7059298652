"""Writers of miniature datasets in the real on-disk formats, with what a reader must find in them.

Each writer lays out a few tiny videos exactly as the official download (or the FFP layout) does, junk files
included, and returns a :class:`RawFixture` holding the expected frames, labels and masks under the names the readers
report (``Test001`` -> ``01``)::

    fixture = write_ucsd(tmp_path / "download")          # download/UCSDped2/{Train,Test}/...
    index = open_dataset("ped2", fixture.source)          # fixture.test["01"], fixture.labels["01"], ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import scipy.io


@dataclass
class RawFixture:
    """A miniature dataset on disk and its ground truth.

    ``train`` / ``test``: video -> frames (N, H, W, C) uint8 RGB as written (exact where the format is lossless,
    see ``lossless``); ``labels``: test video -> (N,) uint8; ``masks``: test video -> (N, H, W) bool.
    """

    source: Path
    dataset: str
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    lossless: bool = True


def make_frames(n: int, height: int, width: int, channels: int, seed: int) -> np.ndarray:
    """(n, H, W, C) uint8: a smooth gradient with a bright square moving one pixel per frame, plus mild noise.

    Smooth content survives MJPEG well, so decoded videos stay close to what was written.
    """
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = (40 + 120 * xs / max(width - 1, 1) + 40 * ys / max(height - 1, 1)).astype(np.float64)
    frames = np.empty((n, height, width, channels), dtype=np.uint8)
    for i in range(n):
        frame = base + rng.normal(0, 2, size=base.shape)
        x0, y0 = (2 + i) % max(width - 6, 1), (1 + seed) % max(height - 6, 1)
        frame[y0 : y0 + 6, x0 : x0 + 6] = 235
        for c in range(channels):
            frames[i, :, :, c] = np.clip(frame * (1.0 - 0.15 * c), 0, 255).astype(np.uint8)
    return frames


def write_image(path: Path, frame: np.ndarray) -> None:
    """Write (H, W, C) RGB (or C = 1 grey) uint8 to ``path``; the suffix picks the format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = frame[:, :, 0] if frame.shape[2] == 1 else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(path.suffix, image)
    assert ok, path
    data.tofile(str(path))


def write_video(path: Path, frames: np.ndarray, fps: float = 10.0) -> None:
    """Write (N, H, W, 3) RGB uint8 frames as an MJPG ``.avi`` (lossy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), path
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def masks_from_labels(labels: np.ndarray, height: int, width: int, seed: int) -> np.ndarray:
    """(N, H, W) bool masks with a small blob on every anomalous frame and nothing on normal ones."""
    masks = np.zeros((len(labels), height, width), dtype=bool)
    for i in np.flatnonzero(labels):
        y, x = (seed + i) % (height - 3), (2 * i) % (width - 4)
        masks[i, y : y + 3, x : x + 4] = True
    return masks


def _junk(path: Path) -> None:
    """A macOS resource fork / dot file as found inside the UCSD archive: not an image, must be ignored."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x05\x16\x07Mac OS X        junk")


def labels_from_ranges(ranges: list[tuple[int, int]], n: int) -> np.ndarray:
    labels = np.zeros(n, dtype=np.uint8)
    for start, end in ranges:
        labels[start - 1 : end] = 1
    return labels


UCSD_M = """TestVideoFile = {};
% UCSD ground truth: anomalous frames, 1-indexed
TestVideoFile{end+1}.gt_frame = [2:3, 5:6];
TestVideoFile{end+1}.gt_frame = [ 4 : 6 ]   % spaces, no semicolon
TestVideoFile{end+1}.gt_frame = [5];
"""
UCSD_RANGES = [[(2, 3), (5, 6)], [(4, 6)], [(5, 5)]]


def write_ucsd(
    parent: Path, ped: int = 2, height: int = 16, width: int = 24, masked: tuple[int, ...] = (1, 3)
) -> RawFixture:
    """``parent/UCSDped<ped>/``: 2 training videos (6, 5 frames), 3 test videos (7, 6, 5 frames) of grey ``.tif``
    frames, ``Test/UCSDped<ped>.m`` with several ranges on one line, ``_gt`` bmp masks for the test videos numbered in
    ``masked`` (Test001 and Test003 by default, as Ped1's download masks only some), and ``._*`` / ``.DS_Store`` junk
    everywhere. ``source`` is ``parent`` (the folder holding UCSDped<ped>).
    """
    base = parent / f"UCSDped{ped}"
    train: dict[str, np.ndarray] = {}
    test: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for number, n in enumerate((6, 5), start=1):
        frames = make_frames(n, height, width, 1, seed=number)
        folder = base / "Train" / f"Train{number:03d}"
        for i, frame in enumerate(frames):
            write_image(folder / f"{i + 1:03d}.tif", frame)
        _junk(folder / "._001.tif")
        train[f"{number:02d}"] = frames
    for number, (n, ranges) in enumerate(zip((7, 6, 5), UCSD_RANGES, strict=True), start=1):
        name = f"{number:02d}"
        frames = make_frames(n, height, width, 1, seed=10 + number)
        folder = base / "Test" / f"Test{number:03d}"
        for i, frame in enumerate(frames):
            write_image(folder / f"{i + 1:03d}.tif", frame)
        _junk(folder / "._002.tif")
        test[name] = frames
        labels[name] = labels_from_ranges(ranges, n)
        if number in masked:
            masks[name] = masks_from_labels(labels[name], height, width, seed=number)
            for i, mask in enumerate(masks[name]):
                write_image(
                    base / "Test" / f"Test{number:03d}_gt" / f"{i + 1:03d}.bmp",
                    (mask[:, :, None] * 255).astype(np.uint8),
                )
            _junk(base / "Test" / f"Test{number:03d}_gt" / "._001.bmp")
    (base / "Test" / f"UCSDped{ped}.m").write_text(UCSD_M)
    _junk(base / "Test" / f"._UCSDped{ped}.m")
    _junk(base / "Test" / "._Test001")
    _junk(base / "Train" / ".DS_Store")
    return RawFixture(parent, f"ped{ped}", train, test, labels, masks)


AVENUE_RANGES = {"01": [(2, 3)], "02": [(1, 2), (4, 5)]}


def write_avenue(root: Path, height: int = 24, width: int = 32) -> RawFixture:
    """``root/``: ``training_videos/01.avi, 02.avi`` (5, 4 frames), ``testing_videos/01.avi, 02.avi`` (6, 5 frames),
    MJPG colour, and ``testing_label_mask/<N>_label.mat`` whose ``volLabel`` cells give :data:`AVENUE_RANGES`.
    Frames are lossy (``lossless`` False); labels and masks are exact.
    """
    train = {f"{k:02d}": make_frames(n, height, width, 3, seed=k) for k, n in ((1, 5), (2, 4))}
    test = {f"{k:02d}": make_frames(n, height, width, 3, seed=20 + k) for k, n in ((1, 6), (2, 5))}
    for name, frames in train.items():
        write_video(root / "training_videos" / f"{name}.avi", frames)
    labels, masks = {}, {}
    for number, (name, frames) in enumerate(test.items(), start=1):
        write_video(root / "testing_videos" / f"{name}.avi", frames)
        labels[name] = labels_from_ranges(AVENUE_RANGES[name], len(frames))
        masks[name] = masks_from_labels(labels[name], height, width, seed=number)
        write_vol_label(root / "testing_label_mask" / f"{number}_label.mat", masks[name])
    _junk(root / "testing_videos" / "._01.avi")
    return RawFixture(root, "avenue", train, test, labels, masks, lossless=False)


def write_vol_label(path: Path, masks: np.ndarray) -> None:
    """Avenue's mask format: ``volLabel``, a 1xF MATLAB cell of HxW uint8 masks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cell = np.empty((1, len(masks)), dtype=object)
    for i, mask in enumerate(masks):
        cell[0, i] = mask.astype(np.uint8)
    scipy.io.savemat(str(path), {"volLabel": cell})


def write_ffp_mat(path: Path, ranges: list[list[tuple[int, int]]], dtype: type = np.uint8) -> None:
    """An FFP label file: ``gt``, a 1xK cell of 2xR [start; end] arrays (uint8, as in the published files)."""
    cell = np.empty((1, len(ranges)), dtype=object)
    for k, video_ranges in enumerate(ranges):
        cell[0, k] = np.array(video_ranges, dtype=dtype).reshape(-1, 2).T
    scipy.io.savemat(str(path), {"gt": cell})


def write_shanghaitech(root: Path, height: int = 24, width: int = 32) -> RawFixture:
    """``root/``: ``training/videos/01_001.avi, 01_002.avi`` (5, 4 frames, MJPG), ``testing/frames/01_0014/*.jpg,
    02_0128/*.jpg`` (6, 5 frames), ``testing/test_frame_mask/*.npy`` (int64) and ``test_pixel_mask/*.npy`` (uint8).
    Test frames are the decoded jpgs (copied as they are by prepare).
    """
    train = {"01_001": make_frames(5, height, width, 3, seed=31), "01_002": make_frames(4, height, width, 3, seed=32)}
    for name, frames in train.items():
        write_video(root / "training" / "videos" / f"{name}.avi", frames)
    test, labels, masks = {}, {}, {}
    for number, (name, n, ranges) in enumerate((("01_0014", 6, [(3, 5)]), ("02_0128", 5, [(1, 1)])), start=1):
        frames = make_frames(n, height, width, 3, seed=40 + number)
        for i, frame in enumerate(frames):
            write_image(root / "testing" / "frames" / name / f"{i:03d}.jpg", frame)
        test[name] = np.stack([_decode(root / "testing" / "frames" / name / f"{i:03d}.jpg") for i in range(n)])
        labels[name] = labels_from_ranges(ranges, n)
        masks[name] = masks_from_labels(labels[name], height, width, seed=number)
        (root / "testing" / "test_frame_mask").mkdir(parents=True, exist_ok=True)
        (root / "testing" / "test_pixel_mask").mkdir(parents=True, exist_ok=True)
        np.save(root / "testing" / "test_frame_mask" / f"{name}.npy", labels[name].astype(np.int64))
        np.save(root / "testing" / "test_pixel_mask" / f"{name}.npy", masks[name].astype(np.uint8))
    return RawFixture(root, "shanghaitech", train, test, labels, masks, lossless=False)


def _decode(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def write_ffp(
    root: Path,
    train_lengths: tuple[int, ...] = (4, 3),
    test_lengths: tuple[int, ...] = (5, 4),
    test_ranges: tuple[list[tuple[int, int]], ...] = ([(2, 3)], [(1, 4)]),
    channels: int = 1,
    height: int = 16,
    width: int = 24,
    suffix: str = ".png",
) -> RawFixture:
    """``root/{training,testing}/frames/<01..>/<000..>`` lossless frames and no label file (tests add the form
    they exercise with :func:`write_ffp_mat` / ``np.save``); ``labels`` holds the ground truth of ``test_ranges``.
    """
    train = {f"{k:02d}": make_frames(n, height, width, channels, seed=k) for k, n in enumerate(train_lengths, 1)}
    test = {f"{k:02d}": make_frames(n, height, width, channels, seed=50 + k) for k, n in enumerate(test_lengths, 1)}
    for split, videos in (("training", train), ("testing", test)):
        for name, frames in videos.items():
            for i, frame in enumerate(frames):
                write_image(root / split / "frames" / name / f"{i:03d}{suffix}", frame)
    labels = {name: labels_from_ranges(r, len(test[name])) for name, r in zip(test, test_ranges, strict=True)}
    return RawFixture(root, "ffp", train, test, labels)
