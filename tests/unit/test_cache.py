"""The frame cache: decoded once, keyed by source and working format, written atomically."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from vad.data import cache as cache_module
from vad.data.cache import FrameCache
from vad.data.frames import read_image, resize
from vad.data.index import FrameSource, Video
from vad.errors import DataError


def write_video(folder: Path, frames: list[np.ndarray], ext: str = ".png") -> Video:
    """Write RGB uint8 frames as images ``000.png ...`` and index them as one video named after the folder."""
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        bgr = frame[:, :, ::-1] if frame.ndim == 3 else frame
        assert cv2.imwrite(str(folder / f"{i:03d}{ext}"), np.ascontiguousarray(bgr))
    return Video(folder.name, FrameSource.from_folder(folder))


def random_frames(n: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def two_videos(tmp_path: Path) -> list[Video]:
    return [
        write_video(tmp_path / "src" / "a", random_frames(5, 12, 16, seed=1)),
        write_video(tmp_path / "src" / "b", random_frames(3, 12, 16, seed=2)),
    ]


def test_build_decodes_each_video_once_and_load_matches_the_source(tmp_path: Path, two_videos: list[Video]) -> None:
    cache = FrameCache(tmp_path / "cache", image_size=(8, 10), channels=3)
    assert cache.build(two_videos, "toy", progress=False) == ["a", "b"]
    entries = sorted((tmp_path / "cache").rglob("*.npy"))
    mtimes = [p.stat().st_mtime_ns for p in entries]

    assert cache.build(two_videos, "toy", progress=False) == []
    assert FrameCache(tmp_path / "cache", image_size=(8, 10)).build(two_videos, "toy", progress=False) == []
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache").rglob("*.npy"))] == mtimes

    frames = cache.load(two_videos[0], "toy")
    assert isinstance(frames, np.memmap)
    assert frames.dtype == np.uint8
    assert frames.shape == (5, 3, 8, 10)  # planar
    expected = np.stack([resize(read_image(p, 3), (8, 10)) for p in two_videos[0].source.images])
    np.testing.assert_array_equal(frames, expected.transpose(0, 3, 1, 2))
    key = cache.key(two_videos[0])
    assert cache.path(two_videos[0], "toy") == tmp_path / "cache" / "toy" / "8x10-c3-linear" / f"a-{key}.npy"


def test_key_changes_with_size_channels_interpolation(tmp_path: Path, two_videos: list[Video]) -> None:
    video = two_videos[0]
    keys = {
        FrameCache(tmp_path, (8, 10), 3, "linear").key(video),
        FrameCache(tmp_path, (8, 12), 3, "linear").key(video),
        FrameCache(tmp_path, (8, 10), 1, "linear").key(video),
        FrameCache(tmp_path, (8, 10), 3, "area").key(video),
    }
    assert len(keys) == 4
    assert all(len(k) == 12 and int(k, 16) >= 0 for k in keys)
    assert FrameCache(tmp_path, (8, 10), 3, "linear").key(video) == FrameCache(tmp_path / "x", (8, 10)).key(video)


def test_modified_source_is_rebuilt_and_the_stale_entry_removed(tmp_path: Path, two_videos: list[Video]) -> None:
    cache = FrameCache(tmp_path / "cache", image_size=(12, 16))
    cache.build(two_videos, "toy", progress=False)
    old = cache.path(two_videos[0], "toy")

    changed = np.full((12, 16, 3), 77, dtype=np.uint8)
    frame = two_videos[0].source.images[2]
    cv2.imwrite(str(frame), changed)
    st = frame.stat()
    os.utime(frame, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    fresh = FrameCache(tmp_path / "cache", image_size=(12, 16))
    assert fresh.build(two_videos, "toy", progress=False) == ["a"]

    new = fresh.path(two_videos[0], "toy")
    assert new != old
    assert not old.exists()
    np.testing.assert_array_equal(fresh.load(two_videos[0], "toy")[2], changed.transpose(2, 0, 1))
    names = files_under(tmp_path / "cache")
    assert names == sorted(
        [
            str(new.relative_to(tmp_path / "cache")),
            str(fresh.path(two_videos[1], "toy").relative_to(tmp_path / "cache")),
        ]
    )


def test_entries_of_an_older_format_version_are_rebuilt_and_removed(
    tmp_path: Path, two_videos: list[Video], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = FrameCache(tmp_path / "cache", image_size=(8, 10))
    monkeypatch.setattr(cache_module, "FORMAT_VERSION", cache_module.FORMAT_VERSION - 1)
    old = FrameCache(tmp_path / "cache", image_size=(8, 10))
    old.build(two_videos[:1], "toy", progress=False)
    old_path = old.path(two_videos[0], "toy")
    monkeypatch.undo()

    assert cache.path(two_videos[0], "toy") != old_path
    assert cache.build(two_videos[:1], "toy", progress=False) == ["a"]
    assert not old_path.exists()
    assert files_under(tmp_path / "cache") == [str(cache.path(two_videos[0], "toy").relative_to(tmp_path / "cache"))]


def test_grey_and_colour(tmp_path: Path) -> None:
    red = np.zeros((6, 6, 3), dtype=np.uint8)
    red[..., 0] = 255
    video = write_video(tmp_path / "src" / "red", [red, red])
    colour = FrameCache(tmp_path / "cache", (6, 6), channels=3)
    grey = FrameCache(tmp_path / "cache", (6, 6), channels=1)
    colour.build([video], "toy", progress=False)
    grey.build([video], "toy", progress=False)
    np.testing.assert_array_equal(colour.load(video, "toy")[0, :, 0, 0], [255, 0, 0])  # RGB planes in order
    g = grey.load(video, "toy")
    assert g.shape == (2, 1, 6, 6)
    assert int(g[0, 0, 0, 0]) == int(cv2.cvtColor(red[:, :, ::-1].copy(), cv2.COLOR_BGR2GRAY)[0, 0]) == 76


def test_mixed_frame_sizes_warn_once_naming_the_video(tmp_path: Path) -> None:
    frames = [np.full((10, 10, 3), 50, np.uint8), np.full((14, 20, 3), 60, np.uint8), np.full((8, 8, 3), 70, np.uint8)]
    video = write_video(tmp_path / "src" / "mixed", frames)
    cache = FrameCache(tmp_path / "cache", (10, 10))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache.build([video], "toy", progress=False)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert "'mixed'" in messages[0]
    assert "resized to 10x10" in messages[0]
    np.testing.assert_array_equal(cache.load(video, "toy")[:, 0, 5, 5], [50, 60, 70])


def test_corrupt_frame_names_the_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    video = write_video(tmp_path / "src" / "bad", random_frames(4, 8, 8, seed=3))
    video.source.images[2].write_bytes(b"not an image at all")
    cache = FrameCache(tmp_path / "cache", (8, 8))
    with pytest.raises(DataError, match=r"bad[/\\]002\.png"):
        cache.build([video], "toy", progress=False)
    assert files_under(tmp_path / "cache") == []
    with pytest.raises(DataError, match="build it first"):
        cache.load(video, "toy")


def _build_in_process(cache_dir: str, folder: str, start: mp.synchronize.Barrier, out: mp.Queue) -> None:
    video = Video(Path(folder).name, FrameSource.from_folder(Path(folder)))
    cache = FrameCache(cache_dir, (48, 64))
    start.wait()
    out.put(cache.build([video], "toy", progress=False))


def test_two_processes_building_the_same_video_both_end_with_a_valid_file(tmp_path: Path) -> None:
    video = write_video(tmp_path / "src" / "v", random_frames(40, 48, 64, seed=4))
    ctx = mp.get_context("fork")
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_build_in_process, args=(str(tmp_path / "cache"), str(tmp_path / "src" / "v"), start, out))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    results = [out.get(timeout=5) for _ in procs]
    assert ["v"] in results  # at least one decoded it; the other decoded it too or found it done
    cache = FrameCache(tmp_path / "cache", (48, 64))
    expected = np.stack([read_image(p, 3) for p in video.source.images]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(cache.load(video, "toy"), expected)
    assert files_under(tmp_path / "cache") == [str(cache.path(video, "toy").relative_to(tmp_path / "cache"))]


def test_cache_pickles_without_open_files(tmp_path: Path, two_videos: list[Video]) -> None:
    cache = FrameCache(tmp_path / "cache", (8, 10))
    cache.build(two_videos, "toy", progress=False)
    clone = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(clone.load(two_videos[1], "toy"), cache.load(two_videos[1], "toy"))


def test_repeated_video_names_are_refused(tmp_path: Path, two_videos: list[Video]) -> None:
    twin = Video("a", two_videos[1].source)
    with pytest.raises(ValueError, match="video names must be unique within 'toy'; repeated: a"):
        FrameCache(tmp_path / "cache", (8, 8)).build([two_videos[0], twin], "toy", progress=False)


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        FrameCache(tmp_path, (8, 8), channels=2)
    with pytest.raises(ValueError, match="interpolation must be one of"):
        FrameCache(tmp_path, (8, 8), interpolation="bilinear")
    with pytest.raises(ValueError, match="image_size"):
        FrameCache(tmp_path, (0, 8))
