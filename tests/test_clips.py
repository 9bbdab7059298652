"""Clip datasets: exact clip counts, target indices, labels and pixel values; short videos; pickling."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from vad.data.cache import FrameCache
from vad.data.clips import ClipDataset, TestClipDataset, clip_to_tensor, clips_to_tensor, collate_clips
from vad.data.index import FrameSource, Video
from vad.errors import DataError

H, W = 6, 8


def frame_value(video: int, frame: int) -> int:
    """The grey level of every pixel of frame ``frame`` of video ``video``: identifies the frame exactly."""
    return 20 * video + 2 * frame


def make_videos(root: Path, lengths: list[int], labels: list[np.ndarray | None] | None = None) -> list[Video]:
    """Videos ``v0, v1, ...`` of uniform grey PNG frames, with a small per-channel offset so RGB order is visible."""
    videos = []
    for v, n in enumerate(lengths):
        folder = root / f"v{v}"
        folder.mkdir(parents=True)
        for i in range(n):
            rgb = np.full((H, W, 3), frame_value(v, i), dtype=np.uint8) + np.array([0, 1, 2], dtype=np.uint8)
            cv2.imwrite(str(folder / f"{i:03d}.png"), rgb[:, :, ::-1].copy())
        videos.append(Video(folder.name, FrameSource.from_folder(folder), None if labels is None else labels[v]))
    return videos


def built_cache(tmp_path: Path, videos: list[Video]) -> FrameCache:
    cache = FrameCache(tmp_path / "cache", (H, W), channels=3)
    cache.build(videos, "toy", progress=False)
    return cache


def expected_clip(video: int, target: int, clip_len: int, stride: int) -> torch.Tensor:
    indices = [target - (clip_len - 1 - k) * stride for k in range(clip_len)]
    values = torch.tensor([[frame_value(video, i) + c for c in range(3)] for i in indices], dtype=torch.float32)
    return (values / 127.5 - 1.0)[:, :, None, None].expand(clip_len, 3, H, W)


@pytest.mark.parametrize(("clip_len", "stride"), [(5, 1), (3, 2), (1, 1), (2, 3)])
def test_every_clip_once_with_exact_targets_and_pixels(tmp_path: Path, clip_len: int, stride: int) -> None:
    lengths = [9, 12, 7]
    videos = make_videos(tmp_path / "src", lengths)
    data = ClipDataset(videos, built_cache(tmp_path, videos), "toy", clip_len=clip_len, frame_stride=stride)

    span = (clip_len - 1) * stride
    assert len(data) == sum(n - span for n in lengths)
    expected_order = [(v, t) for v, n in enumerate(lengths) for t in range(span, n)]
    items = [data[i] for i in range(len(data))]
    assert [(it["video_id"], it["index"]) for it in items] == expected_order
    assert [it["video"] for it in items] == [f"v{v}" for v, _ in expected_order]
    for it, (v, t) in zip(items, expected_order, strict=True):
        assert it["frames"].dtype == torch.float32
        assert it["frames"].shape == (clip_len, 3, H, W)
        assert it["frames"].is_contiguous()
        assert torch.allclose(it["frames"], expected_clip(v, t, clip_len, stride), atol=1e-6, rtol=0)
        assert it["label"] == 0
    assert [list(data.targets(v)) for v in range(3)] == [list(range(span, n)) for n in lengths]
    with pytest.raises(IndexError):
        data[len(data)]


def test_every_uint8_value_maps_to_value_over_127_5_minus_one() -> None:
    levels = np.arange(256, dtype=np.uint8)
    clip = np.stack([levels.reshape(2, 8, 16), levels[::-1].reshape(2, 8, 16)])  # (T=2, C=2, H=8, W=16)
    out = clip_to_tensor(clip)
    assert out.dtype == torch.float32
    assert out.shape == (2, 2, 8, 16)
    values = out.numpy()
    assert np.abs(values - (clip.astype(np.float64) / 127.5 - 1.0)).max() <= 2**-23  # float32 rounding, ~1.2e-7
    assert values.ravel()[[0, 255, 256]].tolist() == [-1.0, 1.0, 1.0]  # the ends exactly: nothing leaves [-1, 1]
    np.testing.assert_array_equal(values[1], -values[0])  # 255 - v maps to minus the value of v


def test_clips_of_different_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"clip 1 is uint8 \(2, 1, 4, 4\)"):
        clips_to_tensor([np.zeros((3, 1, 4, 4), np.uint8), np.zeros((2, 1, 4, 4), np.uint8)])
    with pytest.raises(ValueError, match="clip 0 is float32"):
        clips_to_tensor([np.zeros((3, 1, 4, 4), np.float32)])


def test_batched_items_are_collated_without_a_copy(tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "src", [9, 12])
    data = ClipDataset(videos, built_cache(tmp_path, videos), "toy", clip_len=3)
    indices = [12, 0, 5, 7]
    singles = [data[i] for i in indices]
    expected = torch.stack([item["frames"] for item in singles])

    items = data.__getitems__(indices)
    assert [(it["video_id"], it["index"], it["label"]) for it in items] == [
        (s["video_id"], s["index"], s["label"]) for s in singles
    ]
    batch = collate_clips(items)
    assert torch.equal(batch["frames"], expected)
    assert batch["frames"].data_ptr() == items[0]["frames"].data_ptr()  # the batch buffer itself
    assert batch["video"] == ["v1", "v0", "v0", "v1"]
    assert batch["index"].tolist() == [7, 2, 7, 2]
    assert batch["index"].dtype == torch.int64

    swapped = collate_clips(items[::-1])  # rows of the buffer, but not in order: stacked in the given order
    assert torch.equal(swapped["frames"], expected.flip(0))
    assert swapped["frames"].data_ptr() != items[0]["frames"].data_ptr()

    fallback = collate_clips(singles)  # separate tensors: stacked
    assert torch.equal(fallback["frames"], expected)
    assert fallback["frames"].data_ptr() != singles[0]["frames"].data_ptr()
    reference = default_collate(items)  # a plain DataLoader works too, and gives the same batch
    assert torch.equal(reference["frames"], expected)
    assert reference["video"] == batch["video"]
    for key in ("video_id", "index", "label"):
        assert batch[key].dtype == reference[key].dtype == torch.int64
        assert torch.equal(batch[key], reference[key])


def test_test_dataset_labels_and_clip_len_one_keeps_every_frame(tmp_path: Path) -> None:
    labels = [np.array([0, 0, 1, 1, 0, 1], dtype=np.uint8), None]
    videos = make_videos(tmp_path / "src", [6, 4], labels)
    cache = built_cache(tmp_path, videos)

    test = TestClipDataset(videos, cache, "toy", clip_len=1)
    assert len(test) == 10
    assert [test[i]["index"] for i in range(10)] == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    assert [test[i]["label"] for i in range(10)] == [0, 0, 1, 1, 0, 1, -1, -1, -1, -1]

    test4 = TestClipDataset(videos, cache, "toy", clip_len=4)
    assert [(test4[i]["video_id"], test4[i]["index"], test4[i]["label"]) for i in range(len(test4))] == [
        (0, 3, 1),
        (0, 4, 0),
        (0, 5, 1),
        (1, 3, -1),
    ]
    train = ClipDataset(videos, cache, "toy", clip_len=4)
    assert [train[i]["label"] for i in range(len(train))] == [1, 0, 1, 0]  # unlabelled training video: normal


def test_short_video_is_skipped_with_a_warning(tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "src", [6, 3, 5])
    cache = built_cache(tmp_path, videos)
    with pytest.warns(UserWarning, match=r"video 'v1' is shorter than one clip \(5 frames"):
        data = TestClipDataset(videos, cache, "toy", clip_len=3, frame_stride=2)
    assert data.skipped == ["v1"]
    assert len(data) == 2 + 1
    assert [(data[i]["video_id"], data[i]["index"]) for i in range(len(data))] == [(0, 4), (0, 5), (2, 4)]
    assert list(data.targets(1)) == []


def test_label_count_mismatch_is_an_error(tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "src", [5], [np.zeros(4, dtype=np.uint8)])
    with pytest.raises(DataError, match="4 frame labels for 5 frames in video 'v0'"):
        TestClipDataset(videos, built_cache(tmp_path, videos), "toy", clip_len=2)


def test_unbuilt_cache_is_an_error(tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "src", [5])
    with pytest.raises(DataError, match="build it first"):
        ClipDataset(videos, FrameCache(tmp_path / "cache", (H, W)), "toy")


def test_open_memory_maps_are_not_pickled(tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "src", [60])
    cache = FrameCache(tmp_path / "cache", (64, 64))
    cache.build(videos, "toy", progress=False)
    data = ClipDataset(videos, cache, "toy", clip_len=2)
    first = data[0]["frames"]
    payload = pickle.dumps(data)
    assert len(payload) < 60 * 64 * 64 * 3 // 4
    clone = pickle.loads(payload)
    assert torch.equal(clone[0]["frames"], first)
