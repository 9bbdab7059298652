"""Clip datasets over the frame cache: a clip is a strided slice of one video's cached uint8 array.

A clip holds ``clip_len`` frames taken every ``frame_stride`` frames; its last frame is the *target* (the frame a
predictor predicts, or the frame a reconstruction method with ``clip_len=1`` reconstructs). A video of N frames gives
``N - (clip_len - 1) * frame_stride`` clips, with targets ``(clip_len - 1) * frame_stride .. N - 1``; a video shorter
than one clip is skipped with a warning and listed in ``skipped``.

    train = ClipDataset(index.train, cache, "ped2/training", clip_len=5)
    train[0]  # {"frames": (5, C, H, W) uint8, "video": "01", "video_id": 0, "index": 4, "label": 0}

Items and batches carry the cached uint8 values (a quarter of the bytes of float32 through the loaders, the pinned
memory and the host-to-device copy). The method converts them where it runs: :func:`frames_to_float` maps uint8 to
float32 in [-1, 1] (value / 127.5 - 1, bit for bit what :func:`clips_to_tensor` gives on the host), called by
:meth:`vad.methods.base.VADModule.prepare_batch` on the entries of :data:`FRAME_KEYS` once the batch is on the
module's device (Lightning's ``on_after_batch_transfer``; the loops outside the Trainer call it too).

A method that learns optical flow asks for the flow targets (:mod:`vad.data.flows`): after
``dataset.attach_flows(flow_cache, dataset_name)`` every item also carries ``flows`` float32 (clip_len - 1, 2, H, W),
the flows between the consecutive frames of the clip (entry k from clip frame k to k + 1), read from the cache.
"""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from vad.data.cache import FrameCache, open_frames
from vad.data.index import Video

if TYPE_CHECKING:
    from vad.data.flows import FlowCache
from vad.errors import DataError

# x / 127.5 - 1 is computed as (x - 127.5) * (1 / 127.5): the subtraction is exact in float32 and the product rounds
# once, so values are within 1.2e-7 of the exact ones, 0 and 255 give -1 and 1 exactly and none leaves [-1, 1].
_CENTRE = np.float32(127.5)
_SCALE = np.float32(1 / 127.5)

#: the batch entries that hold frames: uint8 from the loaders, converted by :func:`frames_to_float` where the method
#: runs (``target``: the normal frame a pseudo-anomalous clip is trained towards, :mod:`vad.data.pseudo.plugins`)
FRAME_KEYS = ("frames", "target")


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames (any shape, any device) -> float32 in [-1, 1] on the same device, (value - 127.5) * (1 / 127.5)
    in float32: bit for bit the values of :func:`clips_to_tensor`. A floating-point tensor is taken as already
    converted and returned as it is; any other dtype is refused.

    Runs where the frames are: called on the module's device, the host ships a quarter of the bytes. On an
    accelerator three torch passes (cast, then subtract and multiply in place); on the CPU the host's arithmetic with
    numpy, one frame at a time while it is in the core's cache: 0.7-0.85x the time of those torch passes and about
    that of :func:`clips_to_tensor` on a 2-core VM (one thread, batches of 4 clips of 5 frames at 256x256).
    """
    if frames.is_floating_point():
        return frames
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8 (0..255) or floating point in [-1, 1], got {frames.dtype}")
    if frames.device.type != "cpu":
        return _torch_to_float(frames)
    source = frames.contiguous().numpy()
    out = np.empty(source.shape, dtype=np.float32)
    if out.size:
        chunk = int(np.prod(source.shape[-3:]))  # one (C, H, W) frame (the whole tensor below 3 dimensions)
        for part_out, part in zip(out.reshape(-1, chunk), source.reshape(-1, chunk), strict=True):
            np.copyto(part_out, part)
            part_out -= _CENTRE
            part_out *= _SCALE
    return torch.from_numpy(out)


def _torch_to_float(frames: torch.Tensor) -> torch.Tensor:
    """:func:`frames_to_float` on any device with torch's kernels (used off the CPU)."""
    out = frames.to(torch.float32)
    # the scalars are float32 values: float32 arithmetic on them rounds exactly as the numpy conversion does
    return out.sub_(float(_CENTRE)).mul_(float(_SCALE))


def _clip_shape(clips: Sequence[np.ndarray]) -> tuple[int, int, int, int]:
    """The common (T, C, H, W) of uint8 clips; a clip of another shape or dtype is refused."""
    shape = clips[0].shape
    for b, clip in enumerate(clips):
        if clip.shape != shape or clip.dtype != np.uint8:
            raise ValueError(f"clips must all be uint8 {shape}; clip {b} is {clip.dtype} {clip.shape}")
    return shape


def stack_clips(clips: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 clips (T, C, H, W) -> one contiguous uint8 (B, T, C, H, W) batch tensor: the clips are read (from
    their memory maps) straight into one buffer (what the loaders ship; :func:`frames_to_float` converts it)."""
    out = np.empty((len(clips), *_clip_shape(clips)), dtype=np.uint8)
    for row, clip in zip(out, clips, strict=True):
        np.copyto(row, clip)
    return torch.from_numpy(out)


def clips_to_tensor(clips: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 clips (T, C, H, W) -> one contiguous float32 (B, T, C, H, W) in [-1, 1] (value / 127.5 - 1), on the host:
    :func:`stack_clips` then :func:`frames_to_float`. For frames that stay on the host (the flow estimators of the
    flow-target cache, the stream's flow pairs); the loaders ship uint8 and the method converts on its device."""
    return frames_to_float(stack_clips(clips))


def clip_to_tensor(clip: np.ndarray) -> torch.Tensor:
    """uint8 (T, C, H, W) -> contiguous float32 (T, C, H, W) in [-1, 1]."""
    return clips_to_tensor([clip])[0]


def _stack_tensors(batch: list[torch.Tensor]) -> torch.Tensor:
    """Stack, or return the batch buffer itself when the tensors are its rows in order (see __getitems__).

    Items of different dtypes (uint8 frames beside frames a dataset already converted to float) are stacked as float
    (:func:`frames_to_float` on each; the datasets of the suite give uint8 throughout, pseudo-anomalies included)."""
    if any(t.dtype != batch[0].dtype for t in batch):
        return torch.stack([frames_to_float(t) for t in batch])
    base = batch[0]._base
    row = batch[0].numel() * batch[0].element_size()
    if (
        base is not None
        and base.is_contiguous()
        and base.shape == (len(batch), *batch[0].shape)
        and all(t._base is base and t.data_ptr() == base.data_ptr() + i * row for i, t in enumerate(batch))
    ):
        return base
    return torch.stack(batch)


def collate_clips(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch clip items: ``frames`` (B, T, C, H, W), ``video`` list of names, the integers as int64 (B,) tensors.

    What torch's default collate makes of these dicts, but the frames of items from :meth:`ClipDataset.__getitems__`
    are not copied again, and in a fraction of its time (its generic dispatch and ``torch.tensor`` calls cost more
    per grey clip than slicing it). Values of other types go to the default collate. Frames keep their dtype (uint8
    from the suite's datasets); a batch mixing uint8 and float frames is collated as float (see ``_stack_tensors``).
    """
    batch: dict[str, Any] = {}
    for key, first in samples[0].items():
        values = [sample[key] for sample in samples]
        if isinstance(first, torch.Tensor):
            batch[key] = _stack_tensors(values)
        elif isinstance(first, str):
            batch[key] = values
        elif isinstance(first, int) and not isinstance(first, bool):
            batch[key] = torch.from_numpy(np.array(values, dtype=np.int64))
        else:
            batch[key] = default_collate(values)
    return batch


class ClipDataset(Dataset):
    """Every clip of every (long enough) video once, in video order then target order.

    Items: ``frames`` uint8 (clip_len, C, H, W), the cached values (the method converts them to float32 in [-1, 1]
    on its device, :func:`frames_to_float`); ``video`` name; ``video_id`` position of the video in
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
            from vad.data.flows import open_flows

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
        which :func:`collate_clips` hands on without copying."""
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
