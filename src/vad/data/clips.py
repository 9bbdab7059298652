"""Clip datasets over the frame cache: a clip is a strided slice of one video's cached uint8 array.

A clip holds ``clip_len`` frames taken every ``frame_stride`` frames; its last frame is the *target* (the frame a
predictor predicts, or the frame a reconstruction method with ``clip_len=1`` reconstructs). A video of N frames gives
``N - (clip_len - 1) * frame_stride`` clips, with targets ``(clip_len - 1) * frame_stride .. N - 1``; a video shorter
than one clip is skipped with a warning and listed in ``skipped``.

    train = ClipDataset(index.train, cache, "ped2/training", clip_len=5)
    train[0]  # {"frames": (5, C, H, W) uint8, "video": "01", "video_id": 0, "index": 4, "label": 0}

Items and batches carry the cached uint8 values; the method converts them where it runs (:mod:`vad.data.batches`:
:func:`~vad.data.batches.collate_clips` batches the items, :func:`~vad.data.batches.frames_to_float` converts).

A method that learns optical flow asks for the flow targets (:mod:`vad.data.flows`): after
``dataset.attach_flows(flow_cache, dataset_name)`` every item also carries ``flows`` float32 (clip_len - 1, 2, H, W),
the flows between the consecutive frames of the clip (entry k from clip frame k to k + 1), read from the cache.
"""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vad.data.batches import stack_clips
from vad.data.cache import FrameCache, open_frames
from vad.data.flows import FlowCache, open_flows
from vad.data.index import Video
from vad.errors import DataError


class ClipDataset(Dataset):
    """Every clip of every (long enough) video once, in video order then target order.

    Items: ``frames`` uint8 (clip_len, C, H, W), the cached values (the method converts them to float32 in [-1, 1]
    on its device, :func:`~vad.data.batches.frames_to_float`); ``video`` name; ``video_id`` position of the video in
    ``videos``; ``index`` frame index of the target (the clip's last frame); ``label`` the video's label at the target,
    or :attr:`unlabelled` for a video without labels (0 here: training videos are normal).

    The cache must be built for these videos. Memory maps are opened lazily in each process that reads items and
    are never pickled, so the dataset can be handed to DataLoader workers (fork or spawn).
    """

    unlabelled = 0

    def __init__(
        self,
        videos: Sequence[Video],
        cache: FrameCache,
        dataset_name: str,
        clip_len: int = 5,
        frame_stride: int = 1,
    ) -> None:
        if clip_len < 1 or frame_stride < 1:
            raise ValueError(f"clip_len and frame_stride must be >= 1, got {clip_len} and {frame_stride}")
        self.videos = list(videos)
        self.clip_len = clip_len
        self.frame_stride = frame_stride
        self.span = (clip_len - 1) * frame_stride + 1
        self.paths = [cache.path(v, dataset_name) for v in self.videos]
        self.num_frames = [len(open_frames(p, v.name)) for p, v in zip(self.paths, self.videos, strict=True)]
        self.labels = [self._labels(v, n) for v, n in zip(self.videos, self.num_frames, strict=True)]
        self._index_clips(warn=True)
        self._arrays: dict[int, np.ndarray] = {}
        self.flow_cache: FlowCache | None = None
        self.flow_paths: list[Path] = []
        self._flow_arrays: dict[int, np.ndarray] = {}

    def attach_flows(self, flows: FlowCache, dataset_name: str) -> None:
        """Let every item carry ``flows`` (see the module docstring) from ``flows``, built for these videos."""
        if flows.step != self.frame_stride:
            raise ValueError(f"the flow cache pairs frames {flows.step} apart, the clips {self.frame_stride} apart")
        self.flow_cache = flows
        self.flow_paths = [flows.path(v, dataset_name) for v in self.videos]
        self._flow_arrays = {}

    def video_flows(self, video_id: int) -> np.ndarray:
        """The flows of a whole video, (N - frame_stride, 2, H, W), entry k from frame k to k + frame_stride;
        mapped read-only from the flow cache once per process."""
        array = self._flow_arrays.get(video_id)
        if array is None:
            array = np.asarray(open_flows(self.flow_paths[video_id], self.videos[video_id].name))
            self._flow_arrays[video_id] = array
        return array

    def clip_flows(self, video_id: int, start: int) -> np.ndarray:
        """(clip_len - 1, 2, H, W) flows between the consecutive frames of the clip starting at ``start``."""
        return self.video_flows(video_id)[start : start + self.span - 1 : self.frame_stride]

    def flows_tensor(self, flows: Sequence[np.ndarray]) -> torch.Tensor:
        """Clip flows -> one float32 (B, clip_len - 1, 2, H, W) batch tensor."""
        return torch.from_numpy(np.stack(flows).astype(np.float32, copy=False))

    def _index_clips(self, warn: bool = False) -> None:
        """``skipped``, ``clips_per_video`` and the clip index from ``num_frames`` (a subclass that changes the
        videos' lengths calls it again)."""
        self.skipped = [v.name for v, n in zip(self.videos, self.num_frames, strict=True) if n < self.span]
        for name in self.skipped if warn else ():
            warnings.warn(
                f"video '{name}' is shorter than one clip ({self.span} frames with clip_len={self.clip_len}, "
                f"frame_stride={self.frame_stride}); it is skipped",
                stacklevel=3,
            )
        counts = np.array([max(n - self.span + 1, 0) for n in self.num_frames], dtype=np.int64)
        self.clips_per_video = counts
        self._ends = np.cumsum(counts).tolist()  # a list: bisect on it is ten times faster than searchsorted

    def _labels(self, video: Video, num_frames: int) -> np.ndarray:
        if video.labels is None:
            return np.full(num_frames, self.unlabelled, dtype=np.int64)
        if len(video.labels) != num_frames:
            raise DataError(
                f"{video.source.location}: {len(video.labels)} frame labels for {num_frames} frames in video "
                f"'{video.name}'; fix the label file so it has one label per frame"
            )
        return np.asarray(video.labels, dtype=np.int64)

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def targets(self, video_id: int) -> range:
        """Frame indices that are targets of a clip in video ``video_id`` (empty for a skipped video)."""
        return range(self.span - 1, self.num_frames[video_id])

    def locate(self, i: int) -> tuple[int, int]:
        """(video_id, first frame) of clip ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"clip index {i} out of range for {len(self)} clips")
        video_id = bisect.bisect_right(self._ends, i)
        start = i - (self._ends[video_id - 1] if video_id else 0)
        return video_id, start

    def frames(self, video_id: int) -> np.ndarray:
        """The cached uint8 (N, C, H, W) frames of a video, read-only, mapped from disk once per process."""
        array = self._arrays.get(video_id)
        if array is None:
            # A plain ndarray over the same mapped pages (no copy; it keeps the map open): every slice of an
            # np.memmap runs numpy's Python-level memmap bookkeeping, ~30 us per clip, a tenth of a grey clip's time.
            array = np.asarray(open_frames(self.paths[video_id], self.videos[video_id].name))
            self._arrays[video_id] = array
        return array

    def clip(self, video_id: int, start: int) -> np.ndarray:
        """uint8 (clip_len, C, H, W) view of the cached frames: the clip starting at frame ``start``."""
        return self.frames(video_id)[start : start + self.span : self.frame_stride]

    def _item(self, video_id: int, start: int, frames: torch.Tensor) -> dict[str, Any]:
        target = start + self.span - 1
        return {
            "frames": frames,
            "video": self.videos[video_id].name,
            "video_id": video_id,
            "index": target,
            "label": int(self.labels[video_id][target]),
        }

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """The items of a whole batch (what DataLoader asks for); their frames are the rows of one batch buffer,
        which :func:`~vad.data.batches.collate_clips` hands on without copying."""
        located = [self.locate(i) for i in indices]
        rows = stack_clips([self.clip(v, start) for v, start in located]).unbind(0)
        items = [self._item(v, start, row) for (v, start), row in zip(located, rows, strict=True)]
        if self.flow_cache is not None:
            flows = self.flows_tensor([self.clip_flows(v, start) for v, start in located]).unbind(0)
            for item, flow in zip(items, flows, strict=True):
                item["flows"] = flow
        return items

    def __getstate__(self) -> dict[str, Any]:
        # An open memmap would be pickled as a full in-memory copy of the video.
        state = self.__dict__.copy()
        state["_arrays"] = {}
        state["_flow_arrays"] = {}
        return state


class TestClipDataset(ClipDataset):
    """Every predictable frame of every test video, in order: targets ``(clip_len - 1) * frame_stride .. N - 1``.

    Same items as :class:`ClipDataset`; a video without labels gives ``label`` -1 (unknown).
    """

    __test__ = False  # not a pytest test class
    unlabelled = -1
