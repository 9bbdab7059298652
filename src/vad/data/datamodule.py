"""The Lightning datamodule: dataset on disk -> frame cache -> clip datasets -> loaders.

Any layout :func:`vad.data.layout.open_dataset` reads works; a missing root is generated first when a
``generator`` config is given (the synthetic set):

    <root>/training/frames/<video>/<frame>.jpg
    <root>/testing/frames/<video>/<frame>.jpg     (+ labels, see vad.data.layout)

    dm = VideoDataModule("ped2", "data/ped2", image_size=(256, 256), clip_len=5, val_videos=2)
    dm.prepare_data(); dm.setup("fit"); batch = next(iter(dm.train_dataloader()))  # frames (B, 5, 3, 256, 256)

``prepare_data`` (rank 0) generates the synthetic set if asked and decodes every video once into the cache;
``setup`` indexes the dataset, splits ``val_videos`` training videos off for validation (chosen by ``seed``; model
selection never looks at the test set) and builds the clip datasets. The held-out videos become a labelled
validation set by injected pseudo-anomalies (``val_pseudo``, :mod:`vad.data.pseudo.validation`); ``pseudo`` turns
training clips into pseudo-anomalies with some probability (:mod:`vad.data.pseudo.plugins`).

Data order: the training order of epoch ``e`` is a permutation drawn from ``(seed, e)`` (:class:`EpochShuffle`), and
the training loader (:class:`ResumableLoader`) reports the epoch and the batches it has handed out, which Lightning
stores in every checkpoint; a resumed run therefore continues with exactly the batches the interrupted one had left.
Under DDP each rank trains on its share of that permutation and tests a contiguous run of whole videos
(:class:`VideoShards`): no padded duplicates, no interleaving, every test frame scored once.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.utils.data import DataLoader, DistributedSampler, Subset

from vad.data.cache import FrameCache
from vad.data.clips import ClipDataset, TestClipDataset, collate_clips
from vad.data.flows import FlowCache
from vad.data.frames import INTERPOLATIONS
from vad.data.index import DatasetIndex, MaskSource, Video
from vad.data.layout import open_dataset
from vad.data.pseudo.plugins import PseudoClips
from vad.data.pseudo.validation import PseudoValidationClips
from vad.errors import ConfigError, DataError

DEFAULT_CACHE_DIR = Path(".cache") / "frames"


@dataclass(frozen=True)
class VideoInfo:
    """What evaluation needs about one test video: ``labels`` (num_frames,) uint8 or None; ``skipped`` True when
    the video is shorter than one clip and has no predictions (evaluation leaves it out)."""

    name: str
    num_frames: int
    labels: np.ndarray | None
    skipped: bool


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


class VideoDataModule(L.LightningDataModule):
    """Clips of one dataset for training, validation (held-out training videos) and test.

    Batches are dicts: ``frames`` float32 (B, clip_len, C, H, W) in [-1, 1], ``video`` list of names, ``video_id``,
    ``index`` (target frame) and ``label`` int64 (B,) (see :class:`vad.data.clips.ClipDataset`); after
    :meth:`request` of flows also ``flows`` float32 (B, clip_len - 1, 2, H, W).
    """

    def __init__(
        self,
        name: str,
        root: str | Path,
        layout: str = "auto",
        labels: str | Path = "auto",
        image_size: Sequence[int] = (256, 256),
        channels: int = 3,
        interpolation: str = "linear",
        clip_len: int = 5,
        frame_stride: int = 1,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        persistent_workers: bool = False,
        pin_memory: bool = False,
        val_videos: int | float = 0,
        val_pseudo: Mapping[str, Any] | None = None,
        pseudo: Mapping[str, Any] | None = None,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        generator: Mapping[str, Any] | None = None,
        footage_as_test: bool = False,
    ) -> None:
        super().__init__()
        # Lightning merges these with the method's hparams for the loggers; the synthetic generator's settings would
        # clash with a method's `generator` (its net) and are recorded in the run config anyway.
        self.save_hyperparameters(ignore=["generator"])
        if not isinstance(name, str) or not name:
            raise ConfigError(f"dataset.name must be a non-empty string, got {name!r}")
        self.name = name
        self.root = Path(root)
        self.layout = layout
        self.labels = labels
        self.image_size = _image_size(image_size)
        self.channels = _choice("channels", channels, (1, 3))
        self.interpolation = _choice("interpolation", interpolation, tuple(INTERPOLATIONS))
        self.clip_len = _positive("clip_len", clip_len)
        self.frame_stride = _positive("frame_stride", frame_stride)
        self.batch_size = _positive("batch_size", batch_size)
        self.eval_batch_size = (
            self.batch_size if eval_batch_size is None else _positive("eval_batch_size", eval_batch_size)
        )
        self.num_workers = _positive("num_workers", num_workers, minimum=0)
        self.persistent_workers = bool(persistent_workers)
        self.pin_memory = bool(pin_memory)
        self.val_videos = _val_videos(val_videos)
        self.val_pseudo = _plain(val_pseudo)
        self.pseudo = _plain(pseudo)
        if self.pseudo is not None and not isinstance(self.pseudo, Mapping):
            raise ConfigError(f"dataset.pseudo must be a mapping (pseudo=skip_frame, patch, ...), got {pseudo!r}")
        self.seed = int(seed)
        self.generator = _generator(generator)
        self.cache = FrameCache(
            DEFAULT_CACHE_DIR if cache_dir is None else cache_dir, self.image_size, self.channels, self.interpolation
        )
        #: a dataset without a test split (a folder of videos or frame folders, which the readers index as training
        #: footage) is tested whole, every video unlabelled (``vad.evaluate`` sets it); :attr:`footage` then says so
        self.footage_as_test = bool(footage_as_test)
        self.footage: str | None = None
        #: the flow-target cache when the method asks for flows (:meth:`request`)
        self.flow_cache: FlowCache | None = None
        self.index: DatasetIndex | None = None
        self.train_videos: list[Video] = []
        self.val_split: list[Video] = []
        self.train_dataset: ClipDataset | None = None
        self.val_dataset: PseudoValidationClips | None = None
        self.test_dataset: TestClipDataset | None = None
        # Under DDP a rank may hold no test video (VideoShards); the test gathers every rank's frames anyway.
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def request(self, requests: Mapping[str, Any]) -> None:
        """Make the clips carry what a method asks for besides the frames (``VADModule.clip_requests``); call it
        before ``prepare_data``. ``{"flows": estimator}``: flow targets of that estimator (:mod:`vad.data.flows`),
        computed once per video into the flow cache beside the frame cache."""
        unknown = sorted(set(requests) - {"flows"})
        if unknown:
            raise ConfigError(f"the method asks its clips for {unknown}, which VideoDataModule cannot provide")
        estimator = requests.get("flows")
        self.flow_cache = None if estimator is None else FlowCache(self.cache, estimator, step=self.frame_stride)

    # -- stages ------------------------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Generate the synthetic set when the root is missing and a generator is configured; build the cache."""
        if not self.root.exists() and self.generator is not None:
            from vad.data.synthetic import generate

            generate(self.root, **self.generator)
        index = self._open()
        self.cache.build(index.train, self._cache_name("training"))
        self.cache.build(index.test, self._cache_name("testing"))
        if self.flow_cache is not None:
            self.flow_cache.build(index.train, self._cache_name("training"))
            self.flow_cache.build(index.test, self._cache_name("testing"))

    def setup(self, stage: str | None = None) -> None:
        """Index the dataset and build the clip datasets of ``stage`` (fit / validate / test / predict / None)."""
        if self.index is None:
            self.index = self._open()
            self.train_videos, self.val_split = self._split(self.index.train)
        if stage in ("fit", "validate") and not self.train_videos:
            raise DataError(f"{self.root}: no training videos to fit on; point the dataset root at a set with them")
        if stage in (None, "fit", "validate") and self.train_videos:
            self.train_dataset = self._clips(ClipDataset, self.train_videos, "training")
            if self.pseudo:
                try:
                    self.train_dataset = PseudoClips(self.train_dataset, **self.pseudo, seed=self.seed)  # type: ignore
                except TypeError as error:  # an unknown key of dataset.pseudo
                    raise ConfigError(
                        f"dataset.pseudo: {error}; its keys are kinds, probability, objective, negative_weight, bound"
                    ) from None
            self.val_dataset = self._validation_clips() if self.val_split else None
        if stage in (None, "test", "predict"):
            self.test_dataset = self._clips(TestClipDataset, self.index.test, "testing")

    def train_dataloader(self) -> DataLoader:
        dataset = self._ready(self.train_dataset, "fit")
        replicas, rank = self._replicas()
        sampler = EpochShuffle(dataset, seed=self.seed, num_replicas=replicas, rank=rank)
        return ResumableLoader(dataset, sampler=sampler, batch_size=self.batch_size, **self._loader_options())

    def val_dataloader(self) -> DataLoader | list:
        # No held-out videos: Lightning skips validation when given an empty list.
        if self.val_dataset is None:
            return []
        return self._loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader:
        dataset = self._ready(self.test_dataset, "test")
        replicas, rank = self._replicas()
        sampler = VideoShards(dataset, num_replicas=replicas, rank=rank) if replicas > 1 else None
        return self._loader(dataset, sampler)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self._ready(self.test_dataset, "predict"))

    def training_frames_dataloader(self) -> DataLoader:
        """Every clip of the training videos once, in order, without pseudo-anomalies (and without the held-out
        validation videos): the normal frames a method's training statistics are computed on."""
        if self.index is None:
            self.setup("test")
        base = self.train_dataset
        base = getattr(base, "base", base)  # PseudoClips wraps the plain clips
        if base is None:
            if not self.train_videos:
                raise DataError(f"{self.root}: no training videos to compute training statistics on")
            base = self._clips(ClipDataset, self.train_videos, "training")
        return self._loader(base)

    #: the share of each training video's last clips that calibrates when no video is held out
    CALIBRATION_TAIL = 0.1

    def calibration_dataloader(self) -> tuple[DataLoader, str]:
        """Normal frames not trained on, to calibrate scores (``vad.evaluation.calibration``), and what they are: the held-out
        validation videos' ORIGINAL frames (no injected pseudo-anomaly) when there are some, else the last
        :attr:`CALIBRATION_TAIL` of each training video's clips (trained on: their scores run low, so the
        thresholds are optimistic; hold videos out with ``dataset.val_videos`` for honest ones)."""
        if self.index is None:
            self.setup("test")
        if self.val_split:
            dataset = self._clips(ClipDataset, self.val_split, "training")
            names = ", ".join(v.name for v in self.val_split)
            return self._loader(dataset), f"held-out normal training videos {names} (dataset.val_videos)"
        if not self.train_videos:
            raise DataError(f"{self.root}: no training videos to calibrate on")
        dataset = self._clips(ClipDataset, self.train_videos, "training")
        indices = []
        first = 0
        for count in dataset.clips_per_video.tolist():
            tail = max(1, round(count * self.CALIBRATION_TAIL)) if count else 0
            indices.extend(range(first + count - tail, first + count))
            first += count
        source = f"last {self.CALIBRATION_TAIL:.0%} of each training video's clips (trained on; no held-out videos)"
        return self._loader(Subset(dataset, indices)), source

    # -- for evaluation ----------------------------------------------------------------------------------------------

    @property
    def test_videos(self) -> list[VideoInfo]:
        """Name, frame count, per-frame labels (or None) and skipped flag of every test video, in order."""
        dataset = self._ready(self.test_dataset, "test")
        skipped = set(dataset.skipped)
        return [
            VideoInfo(v.name, n, v.labels, v.name in skipped)
            for v, n in zip(dataset.videos, dataset.num_frames, strict=True)
        ]

    @property
    def test_masks(self) -> list[MaskSource | None]:
        """The pixel masks of every test video (in the order of :attr:`test_videos`), None for a video without;
        read with :func:`vad.evaluation.pixel.metrics.read_masks`."""
        return [v.masks for v in self._ready(self.test_dataset, "test").videos]

    @property
    def val_videos_info(self) -> list[VideoInfo]:
        """Name, frame count, pseudo-anomaly labels and skipped flag of every held-out video (empty without any)."""
        dataset = self.val_dataset
        if dataset is None:
            return []
        skipped = set(dataset.skipped)
        return [
            VideoInfo(v.name, n, labels, v.name in skipped)
            for v, n, labels in zip(dataset.videos, dataset.num_frames, dataset.labels, strict=True)
        ]

    @property
    def validation_plan(self) -> dict[str, Any] | None:
        """The injected pseudo-anomalies of the validation videos (JSON), or None without held-out videos."""
        return None if self.val_dataset is None else self.val_dataset.describe()

    @property
    def label_source(self) -> str | None:
        """Where the test labels came from (recorded with every result)."""
        if self.index is None:
            raise RuntimeError("call setup() before reading label_source")
        return self.index.label_source

    # -- internals ---------------------------------------------------------------------------------------------------

    def _open(self) -> DatasetIndex:
        index = open_dataset(self.name, self.root, layout=self.layout, labels=self.labels)
        if not self.footage_as_test or index.test or not index.train:
            return index
        self.footage = f"every video of {index.root} ({len(index.train)}; no test split, so no labels)"
        self.val_videos = 0  # nothing is trained or validated here: no video is held out of the test
        test = [Video(name=v.name, source=v.source) for v in index.train]
        return DatasetIndex(index.name, index.root, train=[], test=test, label_source=None, layout=index.layout)

    def describe_footage(self) -> str | None:
        """With ``footage_as_test``: which videos are tested when the dataset has no test split (None otherwise),
        known before the test (indexes the dataset, decodes nothing). A root that does not exist yet (a synthetic
        set generated on first use) has a test split."""
        if self.footage_as_test and self.footage is None and self.root.exists():
            self._open()
        return self.footage

    def _split(self, videos: list[Video]) -> tuple[list[Video], list[Video]]:
        """(train, val): the val videos are drawn by ``seed``; both keep the dataset's video order."""
        if not self.val_videos:
            return list(videos), []
        count = self.val_videos if isinstance(self.val_videos, int) else max(1, round(self.val_videos * len(videos)))
        if count >= len(videos):
            raise ConfigError(
                f"dataset.val_videos={self.val_videos} holds out {count} of the {len(videos)} training videos of "
                f"{self.root}; leave at least one for training"
            )
        held = set(np.random.default_rng(self.seed).permutation(len(videos))[:count].tolist())
        return [v for i, v in enumerate(videos) if i not in held], [v for i, v in enumerate(videos) if i in held]

    def _cache_name(self, split: str) -> str:
        # Training and test videos share names ("01"): each split needs its own cache folder.
        return f"{self.name}/{split}"

    def _clips(self, kind: type[ClipDataset], videos: list[Video], split: str) -> ClipDataset:
        # Cheap when prepare_data already ran; decodes what is missing when the module is used without a Trainer.
        name = self._cache_name(split)
        self.cache.build(videos, name)
        dataset = kind(videos, self.cache, name, clip_len=self.clip_len, frame_stride=self.frame_stride)
        if self.flow_cache is not None:
            self.flow_cache.build(videos, name)
            dataset.attach_flows(self.flow_cache, name)
        return dataset

    def _validation_clips(self) -> PseudoValidationClips:
        name = self._cache_name("training")
        self.cache.build(self.val_split, name)
        try:
            dataset = PseudoValidationClips(
                self.val_split,
                self.cache,
                name,
                clip_len=self.clip_len,
                frame_stride=self.frame_stride,
                options=self.val_pseudo,
                seed=self.seed,
            )
        except TypeError as error:
            raise ConfigError(f"dataset.val_pseudo: {error}") from None
        if self.flow_cache is not None:
            dataset.attach_flows(self.flow_cache, name)  # computes the injected videos' flows (not cached)
        return dataset

    def _ready(self, dataset: Any, stage: str) -> Any:
        if dataset is None:
            raise RuntimeError(f"call setup({stage!r}) before asking for its data")
        return dataset

    def _replicas(self) -> tuple[int, int]:
        """(world size, global rank) of the attached trainer; (1, 0) without one."""
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _loader_options(self) -> dict[str, Any]:
        workers = self.num_workers
        return {
            "collate_fn": collate_clips,
            "num_workers": workers,
            "persistent_workers": self.persistent_workers and workers > 0,
            "pin_memory": self.pin_memory,
        }

    def _loader(self, dataset: ClipDataset, sampler: DistributedSampler | None = None) -> DataLoader:
        """An in-order evaluation loader (``sampler``: this rank's share under DDP)."""
        return DataLoader(
            dataset, batch_size=self.eval_batch_size, sampler=sampler, drop_last=False, **self._loader_options()
        )


def _plain(value: Any) -> Any:
    """Hydra hands over DictConfig / ListConfig; validation works on plain containers."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive(key: str, value: Any, minimum: int = 1) -> int:
    if not _is_int(value) or value < minimum:
        raise ConfigError(f"dataset.{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _choice(key: str, value: Any, choices: tuple) -> Any:
    if value not in choices or isinstance(value, bool):
        shown = " or ".join(str(c) for c in choices)
        raise ConfigError(f"dataset.{key} must be {shown}, got {value!r}")
    return choices[choices.index(value)]


def _image_size(value: Any) -> tuple[int, int]:
    value = _plain(value)
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_int(v) and v >= 1 for v in value):
        raise ConfigError(f"dataset.image_size must be two positive integers [height, width], got {value!r}")
    return int(value[0]), int(value[1])


def _val_videos(value: Any) -> int | float:
    if _is_int(value) and value >= 0:
        return int(value)
    if isinstance(value, float) and 0.0 <= value < 1.0:
        return value
    raise ConfigError(
        f"dataset.val_videos must be a count >= 0 or a fraction in [0, 1) of the training videos, got {value!r}"
    )


def _generator(value: Any) -> dict[str, Any] | None:
    value = _plain(value)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"dataset.generator must be a mapping of vad.data.synthetic.generate arguments, got {value!r}"
        )
    return dict(value)
