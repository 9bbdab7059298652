"""uint8 clips to batch tensors: stacking, collation, and the conversion to float32 in [-1, 1].

Items and batches carry the cached uint8 values (a quarter of the bytes of float32 through the loaders, the pinned
memory and the host-to-device copy). The method converts them where it runs: :func:`frames_to_float` maps uint8 to
float32 in [-1, 1] (value / 127.5 - 1, bit for bit what :func:`clips_to_tensor` gives on the host), called by
:meth:`vad.methods.base.VADModule.prepare_batch` on the entries of :data:`FRAME_KEYS` once the batch is on the
module's device (Lightning's ``on_after_batch_transfer``; the loops outside the Trainer call it too).

    batch = collate_clips(dataset.__getitems__([0, 1]))     # frames uint8 (2, T, C, H, W)
    frames = frames_to_float(batch["frames"])               # float32 in [-1, 1], same device
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

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
    """Stack, or return the batch buffer itself when the tensors are its rows in order (see
    :meth:`vad.data.clips.ClipDataset.__getitems__`).

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

    What torch's default collate makes of these dicts, but the frames of items from
    :meth:`vad.data.clips.ClipDataset.__getitems__` are not copied again, and in a fraction of its time (its generic
    dispatch and ``torch.tensor`` calls cost more per grey clip than slicing it). Values of other types go to the
    default collate. Frames keep their dtype (uint8 from the suite's datasets); a batch mixing uint8 and float frames
    is collated as float (see ``_stack_tensors``).
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
