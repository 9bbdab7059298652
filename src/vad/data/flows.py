"""The flow-target cache: each video's optical flows computed once, beside its frame cache entry, as float16 maps.

Methods that learn to predict optical flow (AMC, the co-memory network) need the flow of every training pair as a
target, and the test needs it for the flow error. Computing it per batch (OpenCV DIS runs on the CPU, one pair at a
time) would cost every epoch again; here it is computed once per dataset, working size and estimator:

    <cache_dir>/<dataset_name>/<H>x<W>-c<C>-<interpolation>/flows-s<step>-<estimator>-<id8>/
        <video>-<key12>.npy        float16 (N - step, 2, H, W): entry k = flow from frame k to frame k + step

Flows follow :mod:`vad.flow`'s convention: channel 0 the horizontal, 1 the vertical displacement in pixels of the
working size, ``b(x + flow(x)) ≈ a(x)`` for the pair (a, b) = (frame k, frame k + step). ``step`` is the clip's
frame stride, so the flows between consecutive frames of a clip are consecutive entries.

An estimator with an ``input_size`` (``flow_targets.input_size=[240,360]``) estimates on the working frames resized
to that size and hands back flows averaged down to the working size and rescaled (:class:`vad.flow.FlowEstimator`),
the same way for the cached flows of the source videos as for the flows of pseudo-anomalous clips computed on the
fly, so the targets of training, validation and test agree. On Ped2 at 64x64 (experiments/results/amc_ped2_cpu.md)
DIS at 240x360 doubles the flow of moving pixels (0.17 vs 0.09 px) and lowers that of the static background
(0.03 vs 0.04 px) compared with DIS at 64x64.

``key12`` hashes the frame cache entry's key (source files, working size, channels, interpolation), the step, the
estimator's :meth:`~vad.flow.FlowEstimator.identity` (class, settings, weights digest, library version) and
:data:`FORMAT_VERSION`: a frame that changes, another estimator, preset, checkpoint or size gives another key, so
stale flows are never read; the stale entry of the same video and estimator is removed when the new one is written.
Entries are written to a private temporary file and renamed into place, so an interrupted build leaves nothing a
later run reads, and two processes building at once each produce a complete file (the last rename wins).

    flows = FlowCache(frame_cache, build_flow("dis"))
    flows.build(index.train, "ped2/training")              # multi-threaded over videos, with a progress bar
    flows.load(index.train[0], "ped2/training")            # read-only float16 memmap (N - 1, 2, H, W)
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from vad.data.batches import clips_to_tensor
from vad.data.cache import FrameCache, open_frames, remove_stale
from vad.data.index import Video
from vad.errors import DataError

# Bump when the stored content changes meaning: every entry is rebuilt.
FORMAT_VERSION = 1
#: frame pairs handed to the estimator at once (bounds the float copies of a long video)
CHUNK = 64


@runtime_checkable
class FlowFunction(Protocol):
    """What the flow-target cache needs of a flow estimator (:class:`vad.flow.FlowEstimator` is one; data sits below
    the estimators, so it names only this): ``(a, b) -> flows`` (N, 2, H, W) for frames (N, C, H, W) in [-1, 1], and
    ``identity()``, a string that changes whenever the flows it gives may change (it keys the cache)."""

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor: ...

    def identity(self) -> str: ...


def estimator_tag(estimator: FlowFunction) -> str:
    """A readable folder-name part for the estimator: its class name, lower case (``disflow``, ``flownet2sd``)."""
    return re.sub(r"[^a-z0-9]+", "", type(estimator).__name__.lower()) or "flow"


def compute_flows(estimator: FlowFunction, frames: np.ndarray, step: int = 1) -> np.ndarray:
    """Flows of a uint8 (N, C, H, W) frame array: float32 (N - step, 2, H, W), entry k from frame k to k + step.

    Frames go to the estimator as they go to a method (``value / 127.5 - 1``), ``CHUNK`` pairs at a time, without
    gradient, on the CPU.
    """
    count = len(frames) - step
    if count <= 0:
        return np.zeros((0, 2, *frames.shape[2:]), dtype=np.float32)
    out = np.empty((count, 2, *frames.shape[2:]), dtype=np.float32)
    with torch.no_grad():
        for first in range(0, count, CHUNK):
            stop = min(first + CHUNK, count)
            a = clips_to_tensor([np.asarray(frames[first:stop])])[0]
            b = clips_to_tensor([np.asarray(frames[first + step : stop + step])])[0]
            out[first:stop] = estimator(a, b).float().numpy()
    return out


class FlowCache:
    """Flow targets of whole videos at the working format of ``frames`` (a :class:`FrameCache`), one float16
    ``.npy`` per video, read through memory maps.

    Args:
        frames: the frame cache the flows are computed from (its entries must be built first; :meth:`build` builds
            the missing ones).
        estimator: the flow estimator (``flow_targets=dis`` by default; FlowNet2-SD with its checkpoint).
        step: frame distance of the pairs (the clips' ``frame_stride``).
        workers: threads computing videos in parallel (OpenCV releases the GIL); default: the CPU count.

    Holds no open file; it pickles with its estimator (DIS holds no state).
    """

    def __init__(self, frames: FrameCache, estimator: FlowFunction, step: int = 1, workers: int | None = None) -> None:
        if not isinstance(estimator, FlowFunction):
            raise TypeError(
                f"estimator must be a flow estimator (callable on frame pairs, with identity()), got "
                f"{type(estimator).__name__}"
            )
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        self.frames = frames
        self.estimator = estimator
        self.step = int(step)
        self.workers = max(1, int(workers if workers is not None else (os.cpu_count() or 1)))
        self.identity = estimator.identity()

    @property
    def folder_name(self) -> str:
        """The sub-folder of the frame format folder, e.g. ``flows-s1-disflow-0123abcd``: one per estimator setting
        (the hex digits hash its identity), so caches of two presets coexist."""
        digest = hashlib.sha1(self.identity.encode()).hexdigest()[:8]
        return f"flows-s{self.step}-{estimator_tag(self.estimator)}-{digest}"

    def key(self, video: Video, dataset_name: str) -> str:
        """12 hex digits identifying the frames (their cache entry's key), the step and the estimator."""
        frames = self.frames.path(video, dataset_name).name  # "<video>-<key12>.npy", memoised by the frame cache
        text = f"f{FORMAT_VERSION}\n{frames}\ns{self.step}\n{self.identity}"
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def path(self, video: Video, dataset_name: str) -> Path:
        """Where the flows of ``video`` lie (whether built or not)."""
        folder = self.frames.cache_dir / dataset_name / self.frames.format_dir / self.folder_name
        return folder / f"{video.name}-{self.key(video, dataset_name)}.npy"

    def build(self, videos: Sequence[Video], dataset_name: str, progress: bool = True) -> list[str]:
        """Compute the flows of the videos without an up-to-date entry (their frames are cached first); returns
        the names of those computed. Safe to call from several processes at once."""
        self.frames.build(videos, dataset_name, progress=progress)
        todo = [(v, self.path(v, dataset_name)) for v in videos]
        todo = [(v, target) for v, target in todo if not target.is_file()]
        if not todo:
            return []
        sources = {v.name: self.frames.path(v, dataset_name) for v, _ in todo}
        total = sum(max(len(open_frames(sources[v.name], v.name)) - self.step, 0) for v, _ in todo)
        desc = f"flow targets of {dataset_name} ({estimator_tag(self.estimator)}, {self.frames.format_dir})"
        with (
            tqdm(total=total, desc=desc, unit="flow", disable=not progress, dynamic_ncols=True) as bar,
            ThreadPoolExecutor(max_workers=min(self.workers, len(todo))) as pool,
        ):
            futures = [pool.submit(self._write, v, target, sources[v.name], bar) for v, target in todo]
            for future in futures:
                future.result()  # re-raises a worker's error
        return [v.name for v, _ in todo]

    def load(self, video: Video, dataset_name: str) -> np.ndarray:
        """The cached flows of ``video``: a read-only float16 memmap (N - step, 2, H, W). Raises DataError if not
        built."""
        return open_flows(self.path(video, dataset_name), video.name)

    def _write(self, video: Video, target: Path, source: Path, bar: tqdm) -> None:
        frames = open_frames(source, video.name)
        count = max(len(frames) - self.step, 0)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(count, 2, *frames.shape[2:]))
            for first in range(0, count, CHUNK):
                stop = min(first + CHUNK, count)
                out[first:stop] = compute_flows(self.estimator, frames[first : stop + self.step], self.step)
                bar.update(stop - first)
            out.flush()
            del out
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        remove_stale(target, video.name)


def open_flows(path: Path, video_name: str = "") -> np.ndarray:
    """Memory-map one flow cache entry read-only: float16 (N - step, 2, H, W)."""
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise DataError(
            f"{path}: flow-target cache entry of video '{video_name}' is missing or outdated; build it first "
            "(FlowCache.build, or VideoDataModule.prepare_data)"
        ) from None
    except ValueError as error:
        raise DataError(f"{path}: unreadable flow-target cache entry ({error}); delete it to rebuild") from None
