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

Data order (:mod:`vad.data.datamodule.loaders`): the training loader resumes mid-epoch with exactly the batches an
interrupted run had left; under DDP each rank trains on its share of the epoch's permutation and tests a contiguous
run of whole videos.

A package rather than a module so that it sits above :mod:`vad.data.pseudo`, which it builds on: the lower modules of
``vad.data`` import neither (the import order is ``datamodule -> pseudo -> the rest of data``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, DistributedSampler, Subset

from vad.data.batches import collate_clips
from vad.data.cache import FrameCache
from vad.data.clips import ClipDataset, TestClipDataset
from vad.data.datamodule.loaders import EpochShuffle, ResumableLoader, VideoShards
from vad.data.datamodule.options import (
    check_choice,
    check_generator,
    check_image_size,
    check_positive,
    check_val_videos,
    plain,
)
from vad.data.flows import FlowCache
from vad.data.frames import INTERPOLATIONS
from vad.data.index import DatasetIndex, MaskSource, Video
from vad.data.layout import open_dataset
from vad.data.pseudo.plugins import PseudoClips
from vad.data.pseudo.validation import PseudoValidationClips
from vad.data.synthetic import generate
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
        self.image_size = check_image_size(image_size)
        self.channels = check_choice("channels", channels, (1, 3))
        self.interpolation = check_choice("interpolation", interpolation, tuple(INTERPOLATIONS))
        self.clip_len = check_positive("clip_len", clip_len)
        self.frame_stride = check_positive("frame_stride", frame_stride)
        self.batch_size = check_positive("batch_size", batch_size)
        self.eval_batch_size = (
            self.batch_size if eval_batch_size is None else check_positive("eval_batch_size", eval_batch_size)
        )
        self.num_workers = check_positive("num_workers", num_workers, minimum=0)
        self.persistent_workers = bool(persistent_workers)
        self.pin_memory = bool(pin_memory)
        self.val_videos = check_val_videos(val_videos)
        self.val_pseudo = plain(val_pseudo)
        self.pseudo = plain(pseudo)
        if self.pseudo is not None and not isinstance(self.pseudo, Mapping):
            raise ConfigError(f"dataset.pseudo must be a mapping (pseudo=skip_frame, patch, ...), got {pseudo!r}")
        self.seed = int(seed)
        self.generator = check_generator(generator)
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
        """Normal frames not trained on, to calibrate scores (``vad.evaluation.calibration``), and what they are: the
        held-out validation videos' ORIGINAL frames (no injected pseudo-anomaly) when there are some, else the last
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
        read with :func:`vad.evaluation.pixel.masks.read_masks`."""
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
