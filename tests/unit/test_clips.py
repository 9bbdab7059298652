"""Clip datasets: exact clip counts, target indices, labels and pixel values (uint8 items, converted to float
bit-identically where the method runs); short videos; pickling."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from vad.data.batches import (
    _torch_to_float,
    clip_to_tensor,
    clips_to_tensor,
    collate_clips,
    frames_to_float,
    stack_clips,
)
from vad.data.cache import FrameCache
from vad.data.clips import ClipDataset, TestClipDataset
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
    """The uint8 values of the clip ending at ``target`` (every pixel of a channel alike)."""
    indices = [target - (clip_len - 1 - k) * stride for k in range(clip_len)]
    values = torch.tensor([[frame_value(video, i) + c for c in range(3)] for i in indices], dtype=torch.uint8)
    return values[:, :, None, None].expand(clip_len, 3, H, W)


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
        assert it["frames"].dtype == torch.uint8  # the cached values; the method converts them on its device
        assert it["frames"].shape == (clip_len, 3, H, W)
        assert it["frames"].is_contiguous()
        expected = expected_clip(v, t, clip_len, stride)
        assert torch.equal(it["frames"], expected)
        converted = frames_to_float(it["frames"])
        assert converted.dtype == torch.float32
        assert torch.allclose(converted, expected.float() / 127.5 - 1.0, atol=1e-6, rtol=0)
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


def as_bits(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """The float32 values' bit patterns: equal bits, equal values (no tolerance, -0.0 told from 0.0)."""
    array = t.contiguous().numpy() if isinstance(t, torch.Tensor) else np.ascontiguousarray(t)
    return array.view(np.uint32)


def reference(x: np.ndarray) -> np.ndarray:
    """The documented arithmetic, written out: (value - 127.5) * (1 / 127.5), every step in float32."""
    return (x.astype(np.float32) - np.float32(127.5)) * np.float32(1 / 127.5)


@pytest.mark.parametrize("convert", [frames_to_float, _torch_to_float], ids=["cpu", "torch kernels"])
def test_the_device_conversion_is_bit_identical_to_the_host_conversion_for_every_value(convert) -> None:
    # frames_to_float runs numpy's arithmetic on the CPU and torch's kernels on an accelerator: both checked here
    levels = torch.arange(256, dtype=torch.uint8)
    host = reference(levels.numpy())
    converted = convert(levels)
    assert converted.dtype == torch.float32
    assert converted.device == levels.device
    np.testing.assert_array_equal(as_bits(converted), as_bits(host))
    assert converted[[0, 255]].tolist() == [-1.0, 1.0]
    # any shape and layout: a strided view converts to the same values, in its own shape
    clip = torch.from_numpy(np.stack([levels.numpy().reshape(2, 8, 16), levels.numpy()[::-1].reshape(2, 8, 16)]))
    view = clip.permute(0, 1, 3, 2)
    np.testing.assert_array_equal(as_bits(convert(view)), as_bits(reference(view.numpy())))
    batch = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 4, 2, 5, 7), dtype=np.uint8))
    np.testing.assert_array_equal(as_bits(convert(batch)), as_bits(reference(batch.numpy())))
    np.testing.assert_array_equal(as_bits(clips_to_tensor(list(batch.numpy()))), as_bits(reference(batch.numpy())))
    assert convert(batch[:0]).shape == (0, 4, 2, 5, 7)


def test_the_conversion_passes_float_frames_and_refuses_other_dtypes() -> None:
    floats = torch.rand(2, 3, 1, 4, 4) * 2 - 1
    assert frames_to_float(floats) is floats  # already converted: unchanged, not copied
    half = floats.half()
    assert frames_to_float(half) is half
    for dtype in (torch.int64, torch.int8, torch.bool):
        with pytest.raises(TypeError, match=rf"frames must be uint8 \(0..255\) or floating point .*got {dtype}"):
            frames_to_float(torch.zeros(2, 2, dtype=dtype))


def test_a_real_ped2_batch_converts_exactly_as_the_host_did(ped2_root: Path, tmp_path: Path) -> None:
    from vad.data.layout import open_dataset

    video = open_dataset("ped2", ped2_root).test[0]
    cache = FrameCache(tmp_path / "cache", (256, 256), channels=3)
    cache.build([video], "ped2/testing", progress=False)
    data = TestClipDataset([video], cache, "ped2/testing", clip_len=5)
    indices = [0, 40, 90, len(data) - 1]
    batch = collate_clips(data.__getitems__(indices))
    assert batch["frames"].dtype == torch.uint8
    assert batch["frames"].shape == (4, 5, 3, 256, 256)
    host = reference(np.stack([data.clip(*data.locate(i)) for i in indices]))  # the float items shipped before
    assert len(np.unique(batch["frames"].numpy())) > 100  # real footage, many grey levels
    np.testing.assert_array_equal(as_bits(frames_to_float(batch["frames"])), as_bits(host))
    np.testing.assert_array_equal(as_bits(_torch_to_float(batch["frames"])), as_bits(host))


def test_clips_of_different_shapes_are_refused() -> None:
    for stack in (clips_to_tensor, stack_clips):
        with pytest.raises(ValueError, match=r"clip 1 is uint8 \(2, 1, 4, 4\)"):
            stack([np.zeros((3, 1, 4, 4), np.uint8), np.zeros((2, 1, 4, 4), np.uint8)])
        with pytest.raises(ValueError, match="clip 0 is float32"):
            stack([np.zeros((3, 1, 4, 4), np.float32)])


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

    assert batch["frames"].dtype == torch.uint8

    fallback = collate_clips(singles)  # separate tensors: stacked
    assert torch.equal(fallback["frames"], expected)
    assert fallback["frames"].data_ptr() != singles[0]["frames"].data_ptr()
    reference = default_collate(items)  # a plain DataLoader works too, and gives the same batch
    assert torch.equal(reference["frames"], expected)
    assert reference["video"] == batch["video"]
    for key in ("video_id", "index", "label"):
        assert batch[key].dtype == reference[key].dtype == torch.int64
        assert torch.equal(batch[key], reference[key])


def test_a_batch_mixing_uint8_and_float_frames_is_collated_as_float(tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "src", [9])
    data = ClipDataset(videos, built_cache(tmp_path, videos), "toy", clip_len=3)
    items = data.__getitems__([0, 1, 2])
    converted = frames_to_float(items[1]["frames"])
    mixed = collate_clips([items[0], {**items[1], "frames": converted}, items[2]])
    assert mixed["frames"].dtype == torch.float32
    assert torch.equal(mixed["frames"], frames_to_float(collate_clips(items)["frames"]))


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
