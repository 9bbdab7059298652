"""The datamodule's samplers and training loader: a resumable, epoch-keyed data order and whole-video test shards.

The training order of epoch ``e`` is a permutation drawn from ``(seed, e)`` (:class:`EpochShuffle`), and the
training loader (:class:`ResumableLoader`) reports the epoch and the batches it has handed out, which Lightning
stores in every checkpoint; a resumed run therefore continues with exactly the batches the interrupted one had left.
Under DDP each rank trains on its share of that permutation and tests a contiguous run of whole videos
(:class:`VideoShards`): no padded duplicates, no interleaving, every test frame scored once.

    sampler = EpochShuffle(dataset, seed=0)
    loader = ResumableLoader(dataset, sampler=sampler, batch_size=4, collate_fn=collate_clips)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, DistributedSampler

from vad.data.clips import ClipDataset


class EpochShuffle(DistributedSampler):
    """This rank's share of a permutation drawn from ``(seed, epoch)``, optionally starting ``start`` items into it.

    The order depends on the epoch number only, never on how many epochs ran in this process, so a run resumed at
    epoch ``e`` sees the order an uninterrupted run sees. ``start`` applies to the next iteration only (a resumed
    epoch). With one replica nothing is padded; with several, torch's DistributedSampler pads to equal shares.
    """

    def __init__(self, dataset: ClipDataset, *, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0

    def __iter__(self) -> Any:
        indices = list(super().__iter__())
        start, self.start = self.start, 0
        if getattr(self.dataset, "epoch_keyed", False):
            # a dataset whose items depend on the epoch (vad.data.pseudo.plugins.PseudoClips) gets (epoch, index) keys
            return iter([(self.epoch, i) for i in indices[start:]])
        return iter(indices[start:])


class ResumableLoader(DataLoader):
    """The training loader: :class:`EpochShuffle` order, and a ``state_dict`` Lightning saves in checkpoints.

    State: ``epoch`` and ``batches`` (batches of that epoch handed out so far). After ``load_state_dict`` the next
    iteration continues that epoch after those batches, if it is that epoch's (Lightning sets the epoch before each
    one; a run that stopped at ``max_steps`` mid-epoch resumes into a fresh epoch); a state saved at the end of an
    epoch starts the next one. After a complete pass the next epoch's order is drawn.
    """

    def __init__(self, dataset: ClipDataset, *, sampler: EpochShuffle, batch_size: int, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=False, **kwargs)
        self._epoch = sampler.epoch
        self._batches = 0
        self._resume: tuple[int, int] | None = None

    def __iter__(self) -> Any:
        # The body runs at the first batch, after Lightning has set the epoch of this pass.
        sampler: EpochShuffle = self.sampler  # type: ignore[assignment]
        resume, self._resume = self._resume, None
        skip = resume[1] if resume is not None and resume[0] == sampler.epoch else 0
        sampler.start = skip * self.batch_size
        self._epoch, self._batches = sampler.epoch, skip
        for batch in super().__iter__():
            self._batches += 1
            yield batch
        sampler.set_epoch(self._epoch + 1)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._batches}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        self._resume = (epoch, batches)
        self._epoch, self._batches = epoch, batches


class VideoShards(DistributedSampler):
    """Rank ``rank``'s contiguous run of whole test videos, in order; the runs split the items as evenly as video
    boundaries allow (a rank may get none when there are fewer videos than ranks).

    Every item belongs to exactly one rank (no padding), and each video is scored on one rank in frame order, which
    methods whose test state evolves frame by frame (MNAD's memory) rely on.
    """

    def __init__(self, dataset: ClipDataset, *, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        ends = np.cumsum(dataset.clips_per_video)
        total = int(ends[-1]) if len(ends) else 0
        # each cut is the video boundary nearest to an even split
        cuts = [int(ends[np.abs(ends - total * k / num_replicas).argmin()]) for k in range(1, num_replicas) if total]
        bounds = np.maximum.accumulate([0, *cuts, total]).tolist()
        self.first, self.stop = bounds[rank], bounds[rank + 1]

    def __iter__(self) -> Any:
        return iter(range(self.first, self.stop))

    def __len__(self) -> int:
        return self.stop - self.first
