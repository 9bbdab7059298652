"""The training pseudo-anomaly objective of every method, and the shared end of a training step.

A pseudo-anomaly plug-in (:mod:`vad.data.pseudo.plugins`) marks items of a training batch: those trained towards
their normal target carry ``target`` (taken by ``VADModule.training_clip``), those with the negative objective carry
``pseudo_negative`` (weight w_i) and ``pseudo_bound``. :class:`PseudoObjective`, a part of
:class:`vad.methods.base.VADModule`, splits a batch into the usual items and the negative ones
(:meth:`PseudoObjective.split_pseudo`), gives the negative ones the bounded negative loss
(:meth:`PseudoObjective.pseudo_negative_term`) and ends every method's main training step the same way
(:meth:`PseudoObjective.objective_step`):

    usual, negative = self.split_pseudo(batch)
    terms = self.my_terms(self.training_clip(usual)) if usual is not None else {}
    logged: dict[str, torch.Tensor] = {}
    loss = self.objective_step(self.optimizers(), terms, negative, lambda clip: self(clip), logged)
    self.log_step(logged, loss, batch_size=batch["frames"].shape[0])

Imports nothing of ``vad``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch


def subset_batch(batch: Mapping[str, Any], keep: torch.Tensor) -> dict[str, Any]:
    """The items of ``batch`` where the (B,) boolean ``keep`` is True: tensors and lists of length B are indexed,
    anything else is kept as it is."""
    size = keep.shape[0]
    index = keep.nonzero().flatten().tolist()
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == size:
            out[key] = value[keep.to(value.device)]
        elif isinstance(value, list) and len(value) == size:
            out[key] = [value[i] for i in index]
        else:
            out[key] = value
    return out


class PseudoObjective:
    """The pseudo-anomaly objective of a ``VADModule`` and the shared end of its training step.

    A part of :class:`vad.methods.base.VADModule`, which provides ``training_clip``, ``output_target``, the
    optimisation part (``weighted_sum``, ``check_finite``, ``optimise``) and Lightning's ``log`` and ``device``.
    """

    @staticmethod
    def split_pseudo(batch: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(usual items, items for the bounded negative loss) of a training batch; either may be None (no items).

        A plain batch, or a plug-in batch without ``negative`` items, comes back whole as the first part.
        """
        weights = batch.get("pseudo_negative")
        if weights is None or not bool((weights > 0).any()):
            return dict(batch), None
        negative = weights > 0
        usual = None if bool(negative.all()) else subset_batch(batch, ~negative)
        return usual, subset_batch(batch, negative)

    def pseudo_negative_term(self, output: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """The bounded negative loss of pseudo-anomalous items: mean_i -w_i * min(mse_i, bound_i), mse_i the mean
        squared error of item i's output against its own target (STEAL's objective, bounded so it cannot run away).
        The unclamped error and the bound are logged (``train/pseudo_error``, ``train/pseudo_bound``)."""
        target = self.output_target(self.training_clip(batch))
        error = (output.float() - target.float()).pow(2).flatten(1).mean(1)
        weight = batch["pseudo_negative"].to(error)
        bound = batch["pseudo_bound"].to(error)
        n = error.shape[0]
        self.log("train/pseudo_error", error.detach().mean(), batch_size=n, on_step=True, on_epoch=False)
        self.log("train/pseudo_bound", bound.mean(), batch_size=n, on_step=True, on_epoch=False)
        return -(weight * torch.minimum(error, bound)).mean()

    def objective_step(
        self,
        optimizer: Any,
        terms: Mapping[str, torch.Tensor],
        negative: Mapping[str, Any] | None,
        output_of: Callable[[Any], torch.Tensor],
        logged: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """The shared end of a method's main training step; returns its loss.

        loss = sum_k w_k L_k over the unweighted ``terms`` of the usual items (0 without any) plus the bounded
        negative term (:meth:`pseudo_negative_term`) of the ``negative`` items, whose output ``output_of`` gives
        from their training clip; then one step of ``optimizer`` (counted as the iteration). ``logged`` receives the
        terms and ``pseudo_negative``, for :meth:`log_step`.
        """
        loss = self.weighted_sum(terms) if terms else torch.zeros((), device=self.device)
        logged.update(terms)
        if negative is not None:
            inverse = self.pseudo_negative_term(output_of(self.training_clip(negative)), negative)
            self.check_finite({"pseudo_negative": inverse})
            loss = loss + inverse
            logged["pseudo_negative"] = inverse
        self.optimise(optimizer, loss)
        return loss
