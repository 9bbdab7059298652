"""The optimisation part of every method: the G/D step machinery of manual optimisation, written once.

:class:`Optimisation` is a part :class:`vad.methods.base.VADModule` composes: one optimiser step (zero_grad ->
backward -> optional clipping -> step, :meth:`Optimisation.optimise`), a step that does not advance
``global_step`` (a discriminator's, see :func:`_uncounted`), the finiteness check that stops a diverging run, the
weighted sum of the loss terms, their logging, and the per-iteration learning-rate schedulers Lightning does not step
in manual optimisation. Imports nothing of ``vad`` but the errors.

    named = [("generator", opt_g), ("discriminator", opt_d)]
    return [opt_g, opt_d], multistep_schedulers(named, milestones=[7000], gamma=0.1)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer

from vad.errors import VadError

#: the Lightning releases whose manual-optimisation step counting :func:`_uncounted` is tested on
#: (tests/test_base.py); pyproject.toml pins this range
LIGHTNING_TESTED = ">=2.5,<2.7"


def multistep_schedulers(
    named: Sequence[tuple[str, torch.optim.Optimizer]], milestones: Sequence[int], gamma: float
) -> list[dict[str, Any]]:
    """Per-iteration MultiStepLR schedulers (lr x ``gamma`` after each milestone), logged as ``lr-<name>``."""
    return [
        {
            "scheduler": torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=gamma),
            "interval": "step",
            "name": f"lr-{name}",
        }
        for name, opt in named
    ]


class NonFiniteLossError(VadError, RuntimeError):
    """A loss became NaN or infinite; training stops (after a checkpoint is saved) with this message."""


@contextmanager
def _uncounted(optimizer: LightningOptimizer) -> Iterator[None]:
    """Step an optimiser without advancing ``trainer.global_step``.

    In manual optimisation Lightning counts every ``optimizer.step()`` as a global step, so a G+D method would advance
    two steps per batch and every schedule expressed in iterations (``max_steps``, checkpoint intervals, logging) would
    run at half length. Only the method's primary optimiser counts; the precision / strategy handling of the step
    itself is unchanged.

    Lightning offers no public switch for this: the step counter is advanced by the ``_on_before_step`` /
    ``_on_after_step`` hooks its manual-optimisation loop installs on each LightningOptimizer, which are swapped for
    no-ops here. A release without them fails here, loudly, instead of silently counting D steps; the behaviour is
    tested (``tests/test_base.py``) for the releases of :data:`LIGHTNING_TESTED`.
    """
    if not (hasattr(optimizer, "_on_before_step") and hasattr(optimizer, "_on_after_step")):
        raise RuntimeError(
            f"lightning {L.__version__}: LightningOptimizer has no _on_before_step/_on_after_step hooks, which vad "
            f"uses to keep discriminator steps out of global_step; install lightning{LIGHTNING_TESTED}"
        )
    before, after = optimizer._on_before_step, optimizer._on_after_step
    optimizer._on_before_step = optimizer._on_after_step = lambda: None
    try:
        yield
    finally:
        optimizer._on_before_step, optimizer._on_after_step = before, after


class Optimisation:
    """Optimiser steps, loss checks and sums, loss logging and learning-rate schedules of a ``VADModule``.

    A part of :class:`vad.methods.base.VADModule`, which provides ``weight``, ``grad_clip`` and Lightning's module
    (``trainer``, ``log_dict``, ``manual_backward``, ``clip_gradients``, ``global_step``).
    """

    _schedulers_at: int | None = None  # global_step the step-interval schedulers were last stepped for

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

    def log_step(self, terms: Mapping[str, torch.Tensor], loss: torch.Tensor, batch_size: int) -> None:
        """The log of a training step: each term unweighted (:meth:`log_terms`) and the step's loss as
        ``train/loss``, shown in the progress bar."""
        self.log_terms(terms, batch_size=batch_size)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size, on_step=True, on_epoch=False)

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

    def record_scheduler_step(self, checkpoint: dict[str, Any]) -> None:
        """Bring a checkpoint saved in the middle of an iteration up to date with the iteration's scheduler step.

        A periodic checkpoint is saved by a callback's on_train_batch_end, before this module's: the iteration's
        scheduler step is taken now and recorded, or a resumed run would stay one step behind.
        """
        if "lr_schedulers" in checkpoint and self.trainer.training and self._step_schedulers():
            checkpoint["lr_schedulers"] = [c.scheduler.state_dict() for c in self.trainer.lr_scheduler_configs]
            # The optimiser states were collected before that step: their learning rates are the previous
            # iteration's. Schedulers that compute the next rate from the current one (cosine annealing) would
            # resume from the stale rate, so the rates just set are recorded too.
            for state, optimizer in zip(checkpoint.get("optimizer_states", []), self.trainer.optimizers, strict=False):
                for saved, group in zip(state.get("param_groups", []), optimizer.param_groups, strict=False):
                    saved["lr"] = group["lr"]
