"""The shared base of every method: manual optimisation helpers, the test loop and the scoring hand-off.

A method subclasses :class:`VADModule`, builds its nets and optimisers, and implements

- ``training_step``: its generator / discriminator / extra steps, in its paper's order, through :meth:`optimise`;
- ``frame_signals(batch) -> {name: (N,) tensor}``: the per-frame signals of a test batch (e.g. ``psnr``);
- ``sample_images(batch) -> {"input", "prediction", "target"}``: (N, C, H, W) in [-1, 1] for the sample grid.

and, when its state evolves during the test (MNAD's memory), ``on_test_video_start(video_id)`` and
``test_signals(batch)``: the test loop hands over each batch one video at a time, in frame order.

Everything else lives here once: the per-iteration learning-rate schedule, loss logging, validation on held-out
normal videos, the test loop that collects every test frame's signals exactly once (also under DDP), and the
scoring protocol (``vad.scoring``) that turns them into metrics. No method needs ``if method == ...`` branches here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer

from vad import scoring
from vad.errors import ConfigError, VadError

#: checkpoint key holding {"config": resolved run config, "choices": config-group choices}
CONFIG_KEY = "vad_config"


class NonFiniteLossError(VadError, RuntimeError):
    """A loss became NaN or infinite; training stops (after a checkpoint is saved) with this message."""


@contextmanager
def _uncounted(optimizer: LightningOptimizer) -> Iterator[None]:
    """Step an optimiser without advancing ``trainer.global_step``.

    In manual optimisation Lightning counts every ``optimizer.step()`` as a global step, so a G+D method would advance
    two steps per batch and every schedule expressed in iterations (``max_steps``, checkpoint intervals, logging) would
    run at half length. Only the method's primary optimiser counts; the precision / strategy handling of the step
    itself is unchanged.
    """
    before, after = optimizer._on_before_step, optimizer._on_after_step
    optimizer._on_before_step = optimizer._on_after_step = lambda: None
    try:
        yield
    finally:
        optimizer._on_before_step, optimizer._on_after_step = before, after


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


class VADModule(L.LightningModule):
    """Base LightningModule of the suite's methods (manual optimisation).

    Args:
        channels: image channels (1 grey, 3 RGB).
        clip_len: frames per item: the method's input frames plus the target frame (1 for reconstruction).
        loss: flat mapping term -> weight; a 0 weight skips the term, every computed term is logged unweighted.
        score: signed fusion weights of the per-frame signals (see ``vad.scoring.fuse``).
        grad_clip: max gradient norm applied to every optimiser step, or None.
        channels_last: keep the nets' 4-D weights in channels-last memory format, so convolutions run NHWC (faster
            with oneDNN on CPU and with tensor cores on GPU). A method whose nets reshape feature maps with ``view``
            leaves it off.
    """

    #: names of the per-frame signals :meth:`frame_signals` returns
    signals: tuple[str, ...] = ()
    #: False for methods without trainable weights (e.g. the copy-last baseline): they are evaluated, not trained
    trainable: bool = True

    def __init__(
        self,
        *,
        channels: int,
        clip_len: int,
        loss: Mapping[str, float],
        score: Mapping[str, float],
        grad_clip: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.channels_last = channels_last
        if channels not in (1, 3):
            raise ConfigError(f"model.channels must be 1 or 3, got {channels}")
        if clip_len < 1:
            raise ConfigError(f"model.clip_len must be >= 1, got {clip_len}")
        self.channels = channels
        self.clip_len = clip_len
        self.loss_weights = {name: float(w) for name, w in loss.items()}
        self.score_weights = scoring.check_weights(score, self.signals)
        self.grad_clip = grad_clip
        self._test_records: list[dict[str, np.ndarray]] = []
        self._samples: dict[str, torch.Tensor] | None = None
        self._test_video: int | None = None
        self.test_result: scoring.ProtocolResult | None = None
        self.test_samples: dict[str, np.ndarray] | None = None
        self.run_config: dict[str, Any] | None = None
        self._schedulers_at: int | None = None  # global_step the step-interval schedulers were last stepped for

    # ------------------------------------------------------------------ methods implement these
    def frame_signals(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Per-frame signals of a test batch: name -> (N,) float tensor."""
        raise NotImplementedError

    def sample_images(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Images for the sample grid: ``input`` (last input frame), ``prediction``, ``target``, each (N, C, H, W)."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        if self.channels_last:
            # Converting the weights suffices: a convolution runs channels-last when its weight is, and its output
            # stays so for the next layer.
            self.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ methods with test-time state override these
    def on_test_video_start(self, video_id: int) -> None:
        """Called by the test loop before the first frame of each test video, in test order; a no-op by default."""

    def test_signals(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Per-frame signals of a test batch holding frames of ONE video, in frame order; default :meth:`frame_signals`.

        A method whose state evolves during the test (MNAD's memory updates) overrides this; validation keeps using
        the stateless :meth:`frame_signals`.
        """
        return self.frame_signals(batch)

    # ------------------------------------------------------------------ training helpers
    def weight(self, term: str) -> float:
        """The configured weight of a loss term (0 when absent)."""
        return self.loss_weights.get(term, 0.0)

    def check_finite(self, terms: Mapping[str, torch.Tensor], total: torch.Tensor | None = None) -> None:
        """Raise NonFiniteLossError naming the step and the first non-finite term.

        With ``total`` given only that one value is checked (one device sync per step); the terms are inspected only
        when it is not finite. Under DDP the ranks decide together, so all of them stop at the same step (a rank that
        stopped alone would leave the others waiting in the gradient all-reduce).
        """
        checked = [total] if total is not None else list(terms.values())
        finite = all(bool(torch.isfinite(v.detach()).all()) for v in checked)
        if self._trainer is not None and self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        advice = "lower the learning rate or the term's weight (model.loss / model.optim), or set model.grad_clip"
        for name, value in terms.items():
            if not torch.isfinite(value.detach()).all():
                raise NonFiniteLossError(
                    f"loss term '{name}' is {value.detach().float().mean().item()} at step {self.global_step}; {advice}"
                )
        raise NonFiniteLossError(
            f"the weighted loss is not finite at step {self.global_step} (a non-finite weight in model.loss, or a "
            f"term on another rank); {advice}"
        )

    def weighted_sum(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """sum_k w_k * L_k over the computed terms; raises NonFiniteLossError if any term is not finite."""
        total = sum(self.weight(name) * value for name, value in terms.items())
        self.check_finite(terms, total)  # type: ignore[arg-type]
        return total  # type: ignore[return-value]

    def optimise(self, optimizer: LightningOptimizer, loss: torch.Tensor, *, counts_as_step: bool = True) -> None:
        """zero_grad -> backward -> optional clipping -> step, for one optimiser of a manual-optimisation method.

        Gradients of the optimiser's parameters are zeroed first, so gradients left by another network's loss (e.g.
        the generator's adversarial term flowing into the discriminator) never leak into this step.
        """
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        if counts_as_step:
            optimizer.step()
        else:
            with _uncounted(optimizer):
                optimizer.step()

    def log_terms(self, terms: Mapping[str, torch.Tensor], prefix: str = "train/loss_", **kwargs: Any) -> None:
        """Log each term unweighted as ``train/loss_<name>``."""
        batch_size = kwargs.pop("batch_size", None)
        self.log_dict(
            {f"{prefix}{k}": v.detach().float() for k, v in terms.items()},
            on_step=True,
            on_epoch=False,
            batch_size=batch_size,
            **kwargs,
        )

    def _step_schedulers(self) -> bool:
        """Step the step-interval schedulers once for the current iteration; False if already done."""
        if self._schedulers_at == self.global_step:
            return False
        self._schedulers_at = self.global_step
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == "step":
                config.scheduler.step()
        return True

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Lightning does not step schedulers in manual optimisation; step-interval ones are stepped here per
        # iteration, epoch-interval ones in on_train_epoch_end, so every method gets the same behaviour.
        self._step_schedulers()

    def on_train_epoch_end(self) -> None:
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == "epoch":
                config.scheduler.step()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The composed config travels with the weights so `vad.evaluate ckpt_path=...` rebuilds the same run.
        if self.run_config is not None:
            checkpoint[CONFIG_KEY] = self.run_config
        # A periodic checkpoint is saved by a callback's on_train_batch_end, before this module's: the iteration's
        # scheduler step is taken now and recorded, or a resumed run would stay one step behind.
        if "lr_schedulers" in checkpoint and self.trainer.training and self._step_schedulers():
            checkpoint["lr_schedulers"] = [c.scheduler.state_dict() for c in self.trainer.lr_scheduler_configs]

    # ------------------------------------------------------------------ validation: held-out normal videos
    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        signals = self.frame_signals(batch)
        n = batch["frames"].shape[0]
        self.log_dict({f"val/{k}": v.float().mean() for k, v in signals.items()}, batch_size=n, sync_dist=True)

    # ------------------------------------------------------------------ test: every frame once, then the protocol
    def on_test_epoch_start(self) -> None:
        self._test_records = []
        self._samples = None
        self.test_result = None
        self._test_video = None

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        # A batch may span a video boundary: each video's run of frames is handled on its own, after the
        # on_test_video_start of its video, so per-video state never leaks across the boundary.
        for part in split_by_video(batch):
            video_id = int(part["video_id"][0])
            if video_id != self._test_video:
                self._test_video = video_id
                self.on_test_video_start(video_id)
            signals = self.test_signals(part)
            record = {
                "video_id": part["video_id"].detach().cpu().numpy().astype(np.int64),
                "index": part["index"].detach().cpu().numpy().astype(np.int64),
            }
            for name, value in signals.items():
                record[name] = value.detach().float().cpu().numpy()
            self._test_records.append(record)
            if self._samples is None:
                self._samples = {k: v.detach().float().cpu() for k, v in self.sample_images(part).items()}

    def _gather_records(self) -> dict[str, np.ndarray]:
        """Concatenate this rank's records and, under DDP, every rank's (a rank may hold none); duplicates removed."""
        records = self._test_records
        local = {k: np.concatenate([r[k] for r in records]) for k in records[0]} if records else {}
        if self.trainer.world_size > 1:
            gathered: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, local)
            parts = [g for g in gathered if g]
            local = {k: np.concatenate([g[k] for g in parts]) for k in parts[0]} if parts else {}
        if not local:
            raise RuntimeError("the test split yielded no frames to score")
        # A distributed sampler pads the last batches with repeated items: keep the first of each (video, frame).
        key = local["video_id"] * (1 << 32) + local["index"]
        _, first = np.unique(key, return_index=True)
        first.sort()
        return {k: v[first] for k, v in local.items()}

    def on_test_epoch_end(self) -> None:
        records = self._gather_records()
        datamodule = self.trainer.datamodule
        videos = datamodule.test_videos
        result = scoring.evaluate(
            scoring.videos_from_records(records, videos, signals=self.signals),
            self.score_weights,
            label_source=datamodule.label_source,
        )
        self.test_result = result
        self.test_samples = {k: v.numpy() for k, v in (self._samples or {}).items()}
        for name in ("auc_micro", "auc_macro", "eer", "ap", "auc_micro_raw"):
            value = getattr(result, name)
            if value is not None and not math.isnan(value):
                self.log(f"test/{name}", float(value), rank_zero_only=True)
