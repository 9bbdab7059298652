"""The loops every method shares: the training means, signal collection and calibration, validation and the test.

:class:`Loops` is a part :class:`vad.methods.base.VADModule` composes. Validation runs on held-out normal videos
with injected pseudo-anomalies (``val/auc_micro``, ``val/auc_macro`` under the test's protocol); the test collects
every test frame's signals exactly once (also under DDP, :meth:`Loops._gather_records`) and, with a pixel
evaluation given for the test (:meth:`Loops.begin_test`), the error maps of the test frames; the scoring protocol
(``vad.evaluation.protocol``) turns them into metrics. May import ``vad.evaluation`` and the methods' panel data.

    model.begin_test(pixel=pixel)          # optional: the pixel-level metrics of this test
    trainer.test(model, datamodule=datamodule)
    model.end_test()
    model.test_result, model.test_calibrated, model.test_samples
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vad.evaluation import protocol as scoring
from vad.evaluation.calibration import Calibration, calibrated_metrics
from vad.evaluation.records import videos_from_records
from vad.evaluation.smoothing import smoothing_or
from vad.methods.panels import Panel, Samples

if TYPE_CHECKING:
    from vad.evaluation.pixel.evaluation import PixelEvaluation

#: label source recorded with validation results
VALIDATION_LABELS = "pseudo-anomalies injected into held-out normal training videos (no test label)"
#: the samples of the test's first batch kept for the report's sample grid
TEST_SAMPLE_ROWS = 4


def split_by_video(batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The runs of consecutive items of one video in a collated batch (``video_id`` (B,)), in batch order.

    Every tensor or list entry is sliced along its first dimension; a batch of one video comes back whole.
    """
    ids = batch["video_id"]
    cuts = (torch.nonzero(ids[1:] != ids[:-1]).flatten() + 1).tolist()
    if not cuts:
        return [dict(batch)]
    bounds = [0, *cuts, len(ids)]
    return [{k: v[a:b] for k, v in batch.items()} for a, b in itertools.pairwise(bounds)]


def _record(batch: Mapping[str, Any], signals: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The frames of a batch (video id, target frame index) with their signals, on the CPU."""
    record = {
        "video_id": batch["video_id"].detach().cpu().numpy().astype(np.int64),
        "index": batch["index"].detach().cpu().numpy().astype(np.int64),
    }
    record.update({k: v.detach().float().cpu().numpy() for k, v in signals.items()})
    return record


class Loops:
    """Training means, signal collection, calibration, validation and test loops of a ``VADModule``.

    A part of :class:`vad.methods.base.VADModule`, which provides the method's signals (``frame_signals``,
    ``test_signals``, ``test_signals_and_maps``, ``sample_panels``), ``prepare_batch``, the declarations
    (``signals``, ``score_weights``, ``training_mean_names``, ``error_map_description``, ``smoothing``) and
    Lightning's module.
    """

    #: the protocol result of the last test, and of the last validation epoch on the pseudo-anomaly validation set
    test_result: scoring.ProtocolResult | None = None
    val_result: scoring.ProtocolResult | None = None
    #: the last test scored as a stream (``vad.evaluation.calibration.calibrated_metrics``), when calibrated
    test_calibrated: dict[str, Any] | None = None
    #: the sample panels of the test's first frames, for the report (``vad.reporting.panels.render(*samples)``)
    test_samples: Samples | None = None
    #: the signals' distribution on held-out normal frames (``vad.evaluation.calibration``), saved in checkpoints
    calibration: Calibration | None = None
    #: collects the error maps of the test frames, for the test it is given to (:meth:`begin_test`)
    pixel_evaluation: PixelEvaluation | None = None

    # ------------------------------------------------------------------ means over the training frames
    def training_quantities(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Per-frame values (N,) of each of ``training_mean_names`` on a batch of normal training clips; by default
        those of the method's :meth:`frame_signals` (whose values before the means exist must not matter for them)."""
        signals = self.frame_signals(batch)
        return {name: signals[name] for name in self.training_mean_names}

    @property
    def training_means_ready(self) -> bool:
        """True when the method needs no training means or they have been computed (also: loaded)."""
        return not self.training_mean_names or bool(torch.isfinite(self.training_means).all())

    def training_mean(self, name: str, default: float = 1.0) -> float:
        """The mean of ``name`` over the training frames, or ``default`` before it is computed (validation during
        training, where the per-video min-max makes constant factors irrelevant)."""
        value = float(self.training_means[self.training_mean_names.index(name)])
        return value if math.isfinite(value) else default

    @torch.no_grad()
    def compute_training_means(self, loader: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        """Means of :meth:`training_quantities` over every clip of ``loader`` (the normal training clips, in order),
        with the current weights in eval mode, stored in the ``training_means`` buffer (so in checkpoints).

        ``vad.train`` calls it once after training and writes the values into the last checkpoint
        (``finalise_checkpoint``); a test whose
        checkpoint lacks them (a ``best_val`` checkpoint, saved before the end) computes them at its start."""
        was_training = self.training
        self.eval()
        sums = torch.zeros(len(self.training_mean_names), dtype=torch.float64)
        count = 0
        for batch in loader:
            moved = self.prepare_batch(batch)
            values = self.training_quantities(moved)
            sums += torch.stack([values[n].double().sum().cpu() for n in self.training_mean_names])
            count += int(moved["frames"].shape[0])
        self.train(was_training)
        if count == 0:
            raise RuntimeError("no training clips to compute the training means on")
        means = sums / count
        self.training_means.copy_(means.to(self.training_means))
        return dict(zip(self.training_mean_names, means.tolist(), strict=True))

    # ------------------------------------------------------------------ calibration on held-out normal frames
    @torch.no_grad()
    def collect_signals(self, loader: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Every clip's :meth:`frame_signals` (stateless: no test-time memory update) over ``loader``, in eval mode:
        name -> (N,) float64."""
        return self._collect_signals(loader)[0]

    def _collect_signals(
        self, loader: Iterable[Mapping[str, Any]]
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """:meth:`collect_signals`, with each clip's video id and target frame index (from the batches; a batch
        without them counts as one video, in loader order)."""
        was_training = self.training
        self.eval()
        columns: dict[str, list[np.ndarray]] = {name: [] for name in self.signals}
        videos: list[np.ndarray] = []
        indices: list[np.ndarray] = []
        seen = 0
        for batch in loader:
            moved = self.prepare_batch(batch)
            for name, value in self.frame_signals(moved).items():
                columns[name].append(value.detach().double().cpu().numpy())
            n = len(moved["frames"])
            video = batch.get("video_id")
            index = batch.get("index")
            videos.append(np.zeros(n, np.int64) if video is None else torch.as_tensor(video).cpu().numpy())
            indices.append(np.arange(seen, seen + n) if index is None else torch.as_tensor(index).cpu().numpy())
            seen += n
        self.train(was_training)
        signals = {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in columns.items()}
        video_ids = np.concatenate(videos).astype(np.int64) if videos else np.zeros(0, np.int64)
        frame_indices = np.concatenate(indices).astype(np.int64) if indices else np.zeros(0, np.int64)
        return signals, video_ids, frame_indices

    def calibrate(
        self, loader: Iterable[Mapping[str, Any]], source: str, smoothing: float | None = None
    ) -> Calibration:
        """Fit :attr:`calibration` on the normal clips of ``loader`` (``source`` says which, for the report); the
        stream scores are smoothed causally with ``smoothing`` frames (None: the run's ``model.smoothing``), and so
        are the calibration frames' scores, video by video in frame order, before the thresholds are taken."""
        signals, videos, indices = self._collect_signals(loader)
        order = np.lexsort((indices, videos))  # video by video, in time order
        self.calibration = Calibration.fit(
            {name: values[order] for name, values in signals.items()},
            self.score_weights,
            source=source,
            smoothing=smoothing_or(smoothing, self.smoothing),
            videos=videos[order],
        )
        return self.calibration

    # ------------------------------------------------------------------ validation: held-out normal videos
    def on_validation_epoch_start(self) -> None:
        self._val_records = []

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Signals of the held-out videos' frames (stateless: :meth:`frame_signals`, so a method's test-time state,
        such as MNAD's memory updates, never changes the trained model); their means are logged as ``val/<signal>``
        and the frames kept for the epoch's AUC."""
        signals = self.frame_signals(batch)
        n = batch["frames"].shape[0]
        self.log_dict({f"val/{k}": v.float().mean() for k, v in signals.items()}, batch_size=n, sync_dist=True)
        self._val_records.append(_record(batch, signals))

    def on_validation_epoch_end(self) -> None:
        """``val/auc_micro`` and ``val/auc_macro`` on the pseudo-anomaly validation set, under the test's protocol
        (the method's fusion of per-video min-max normalised signals); every rank computes the same values."""
        videos = getattr(self.trainer.datamodule, "val_videos_info", None) if self._trainer is not None else None
        if not videos or self.trainer.sanity_checking:
            return
        records = self._gather_records(self._val_records, "the validation videos")
        result = scoring.evaluate(
            videos_from_records(records, videos, signals=self.signals),
            self.score_weights,
            label_source=VALIDATION_LABELS,
            smoothing=self.smoothing,
        )
        self.val_result = result
        for name in ("auc_micro", "auc_macro"):
            value = getattr(result, name)
            if value is not None and not math.isnan(value):
                self.log(f"val/{name}", float(value), prog_bar=name == "auc_micro")

    # ------------------------------------------------------------------ test: every frame once, then the protocol
    def begin_test(self, pixel: PixelEvaluation | None = None) -> None:
        """Declare what the next test measures besides the protocol's metrics: with ``pixel``, the pixel-level
        metrics of the method's error maps (``vad.evaluation.pixel.evaluation``). :meth:`end_test` ends it."""
        self.pixel_evaluation = pixel

    def end_test(self) -> None:
        """End what :meth:`begin_test` declared: later tests measure the protocol's metrics only."""
        self.pixel_evaluation = None

    def on_test_epoch_start(self) -> None:
        if not self.training_means_ready:
            # a checkpoint saved before the end of training (best_val) does not hold them yet
            self.compute_training_means(self.trainer.datamodule.training_frames_dataloader())
        self._test_records = []
        self.test_samples = None
        self.test_result = None
        self.test_calibrated = None
        self._test_video = None
        if self.pixel_evaluation is not None:
            self.pixel_evaluation.start(self.trainer.datamodule, self.global_rank, self.error_map_description)
        self.begin_test_state()

    def begin_test_state(self) -> None:
        """Reset the state a method's test evolves (MNAD's test memory) to the trained one; called at the start of
        every test and by ``vad.score`` before each input. A no-op by default."""

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        # A batch may span a video boundary: each video's run of frames is handled on its own, after the
        # on_test_video_start of its video, so per-video state never leaks across the boundary.
        for part in split_by_video(batch):
            video_id = int(part["video_id"][0])
            if video_id != self._test_video:
                self._test_video = video_id
                self.on_test_video_start(video_id)
            pixel = self.pixel_evaluation
            if pixel is not None and pixel.collecting:
                signals, maps = self.test_signals_and_maps(part)
                pixel.add(video_id, part["index"], maps)
            else:
                signals = self.test_signals(part)
            self._test_records.append(_record(part, signals))
            if self.test_samples is None:
                self.test_samples = self._samples(part)

    def _samples(self, batch: Mapping[str, Any]) -> Samples:
        """The first :data:`TEST_SAMPLE_ROWS` samples of a batch's panels, on the CPU, with their videos and frames."""
        frames = batch["index"]
        frames = frames.tolist() if isinstance(frames, torch.Tensor) else list(frames)
        rows = slice(TEST_SAMPLE_ROWS)
        shown = {name: Panel(p.kind, p.numpy().data[rows]) for name, p in self.sample_panels(batch).items()}
        return Samples(shown, list(batch["video"][rows]), frames[rows])

    def _gather_records(
        self, records: list[dict[str, np.ndarray]] | None = None, what: str = "the test split"
    ) -> dict[str, np.ndarray]:
        """Concatenate this rank's records (default: the test's) and, under DDP, every rank's (a rank may hold none);
        duplicates removed."""
        records = self._test_records if records is None else records
        local = {k: np.concatenate([r[k] for r in records]) for k in records[0]} if records else {}
        if self.trainer.world_size > 1:
            parts = [g for g in self._all_gather_objects(local) if g]
            local = {k: np.concatenate([g[k] for g in parts]) for k in parts[0]} if parts else {}
        if not local:
            raise RuntimeError(f"{what} yielded no frames to score")
        # A distributed sampler pads the last batches with repeated items: keep the first of each (video, frame).
        key = local["video_id"] * (1 << 32) + local["index"]
        _, first = np.unique(key, return_index=True)
        first.sort()
        return {k: v[first] for k, v in local.items()}

    def _all_gather_objects(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (``all_gather_object`` under DDP; every rank must call this)."""
        if self._trainer is None or self.trainer.world_size == 1:
            return [obj]
        gathered: list[Any] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(gathered, obj)
        return gathered

    def on_test_epoch_end(self) -> None:
        records = self._gather_records()
        datamodule = self.trainer.datamodule
        videos = datamodule.test_videos
        result = scoring.evaluate(
            videos_from_records(records, videos, signals=self.signals),
            self.score_weights,
            label_source=datamodule.label_source,
            smoothing=self.smoothing,
        )
        self.test_result = result
        if self.calibration is not None:
            self.test_calibrated = calibrated_metrics(self.calibration, result)
        for name in ("auc_micro", "auc_macro", "eer", "ap", "auc_micro_raw"):
            value = getattr(result, name)
            if value is not None and not math.isnan(value):
                self.log(f"test/{name}", float(value), rank_zero_only=True)
        pixel = self.pixel_evaluation
        if pixel is not None:
            pixel.finish(self._all_gather_objects)
            for name in ("auc", "ucsd_auc", "rbdc", "tbdc"):
                value = (pixel.block or {}).get(name)
                if value is not None and not math.isnan(value):
                    self.log(f"test/pixel_{name}", float(value), rank_zero_only=True)
