"""The two-branch appearance-motion co-memory network (the seed's design, built from MNAD's memory module).

A motion branch encodes the last two input frames (I_{t-1}, I_t), reads its own memory and predicts the optical flow;
an appearance branch encodes the t input frames, reads the appearance memory, and its decoder, which also takes the
motion branch's features, predicts I_{t+1} (:class:`vad.nets.amc.CoMemoryNet`). Loss = l_f L_flow (mean squared
error to the cached flow target, :mod:`vad.data.flows`) + l_p L_pred (mean squared error of I_{t+1}) + compactness
and separateness of each memory (MNAD's terms, summed over the branches, logged per branch). One Adam optimiser,
cosine-annealed over the run; both memories are updated after every step with that step's queries (MNAD's rule)
and are buffers, so they travel in checkpoints and are restored on resume. The test reads the trained memories
without updating them.

Which flow is the motion target (``motion_target``): ``next`` (default), the flow from I_t to I_{t+1}, aligned with
the predicted frame and with AMC's F_t, so the motion branch must extrapolate the motion it sees through its memory;
``observed``, the flow from I_{t-1} to I_t between the two frames the branch sees. The seed does not say which.

Score: AMC's max-patch score (:mod:`vad.methods.amc_signals`): the window with the largest flow error, the
prediction error in it, S = log(w_F S_F) + lambda_S log(w_I S_I), w the inverse training means (stored in the
checkpoint).
Ablations of the seed: ``model.net.motion_memory=false`` (no motion memory), memory sizes
``model.net.appearance_items`` / ``motion_items`` (10 / 10 default, 15 / 15).

    python -m vad.train model=amc_comemory dataset=ped2        (experiment=amc_comemory_ped2 for the preset)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from vad.errors import ConfigError
from vad.evaluation.patch import check_patch
from vad.methods import losses, panels
from vad.methods.amc_signals import FLOW_TARGETS, PATCH_DEFAULTS, PATCH_SIGNALS, patch_signals, require_flows
from vad.methods.base import Clip, FrozenNet, VADModule
from vad.nets.amc import CoMemoryNet, CoMemoryOutput

MOTION_TARGETS = ("next", "observed")


class AMCCoMemory(VADModule):
    """The co-memory network with a single Adam optimiser (manual optimisation).

    Args:
        channels: image channels (1 or 3).
        clip_len: t + 1 (t >= 2 input frames, the last frame is the target).
        net: keyword arguments of :class:`vad.nets.amc.CoMemoryNet` (features, appearance_items, motion_items,
            motion_memory, motion_skips, memory).
        motion_target: ``next`` or ``observed`` (see the module docstring).
        loss: weights of ``prediction``, ``flow``, ``compactness``, ``separateness``.
        optim: ``lr``, ``betas``, ``anneal`` (``step``: cosine to 0 over the run, or ``none``).
        patch: ``window``, ``stride``, ``lam`` of the max-patch score.
        score: fusion weights of the signals (default ``{patch_score: 1}``).
        frozen: ``{"flow_targets": estimator}`` (config group ``flow_targets``), required.
        grad_clip: max gradient norm per optimiser step.
        common: the other arguments every method takes, see :class:`~vad.methods.base.VADModule`.
    """

    signals = PATCH_SIGNALS
    loss_terms = ("prediction", "flow", "compactness", "separateness")
    default_loss: ClassVar[Mapping[str, float]] = {
        "prediction": 1.0,
        "flow": 1.0,
        "compactness": 0.1,
        "separateness": 0.1,
    }
    default_score: ClassVar[Mapping[str, float]] = {"patch_score": 1.0}
    frozen_nets: ClassVar[Mapping[str, FrozenNet]] = {"flow_targets": FLOW_TARGETS}
    training_mean_names = ("patch_flow_error", "patch_intensity_error")

    def __init__(
        self,
        *,
        net: Mapping[str, Any] | None = None,
        motion_target: str = "next",
        optim: Mapping[str, Any] | None = None,
        patch: Mapping[str, Any] | None = None,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        clip_len = self.clip_len
        if clip_len < 3:
            raise ConfigError(
                f"model.clip_len must be >= 3 (two input frames for the motion branch + the target), got {clip_len}"
            )
        if motion_target not in MOTION_TARGETS:
            raise ConfigError(f"model.motion_target={motion_target!r} is not one of {list(MOTION_TARGETS)}")
        if self.frozen_net("flow_targets") is None:
            raise ConfigError(f"AMCCoMemory needs flow targets: choose {FLOW_TARGETS.choices}")
        self.motion_target = motion_target
        self.optim = {"lr": 2e-4, "betas": (0.9, 0.999), "anneal": "step"} | dict(optim or {})
        if self.optim["anneal"] not in ("step", "none"):
            raise ConfigError(f"model.optim.anneal={self.optim['anneal']!r} is not one of ['step', 'none']")
        self.patch = check_patch(patch, PATCH_DEFAULTS)
        self.save_hyperparameters(ignore=["frozen"])
        self.net = CoMemoryNet(self.channels, clip_len - 1, **dict(net or {}))

    def clip_requests(self) -> dict[str, Any]:
        return {"flows": self.frozen_net("flow_targets")}

    # ------------------------------------------------------------------ forward
    def flow_target(self, clip: Clip) -> torch.Tensor:
        """The flow the motion branch predicts: (N, 2, H, W)."""
        flows = require_flows(self, clip)
        return flows[:, -1] if self.motion_target == "next" else flows[:, -2]

    def forward(self, clip: Clip) -> CoMemoryOutput:
        return self.net(clip.inputs)

    def predict(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self(self.clip_of(batch)).frame

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.optim["lr"], betas=tuple(self.optim["betas"]))
        if self.optim["anneal"] == "none":
            return optimizer
        length = self.trainer.estimated_stepping_batches
        if not math.isfinite(length):
            raise ConfigError("model.optim.anneal=step needs a finite run: set trainer.max_steps or max_epochs")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(length)))
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]

    def loss_terms_of(self, out: CoMemoryOutput, clip: Clip) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(unweighted terms, per-branch memory terms for the log); a term whose weight is 0 is not computed."""
        terms: dict[str, torch.Tensor] = {}
        if self.weight("prediction"):
            terms["prediction"] = losses.intensity_loss(out.frame, clip.target)
        if self.weight("flow"):
            terms["flow"] = losses.intensity_loss(out.flow, self.flow_target(clip).to(out.flow.dtype))
        branches = {"appearance": out.appearance_read, "motion": out.motion_read}
        logged: dict[str, torch.Tensor] = {}
        for term, fn in (("compactness", losses.compactness_loss), ("separateness", losses.separateness_loss)):
            if not self.weight(term):
                continue
            parts = []
            for name, read in branches.items():
                if read is None:
                    continue
                args = (
                    (read.queries, read.positive)
                    if term == "compactness"
                    else (read.queries, read.positive, read.negative)
                )
                value = fn(*args)
                logged[f"{term}_{name}"] = value
                parts.append(value)
            terms[term] = torch.stack(parts).sum()
        return terms, logged

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        # Pseudo-anomalies with the negative objective get only the bounded negative term on the predicted frame and
        # never update the memories.
        usual, negative = self.split_pseudo(batch)
        n = batch["frames"].shape[0]
        terms: dict[str, torch.Tensor] = {}
        logged: dict[str, torch.Tensor] = {}
        out = None
        if usual is not None:
            clip = self.training_clip(usual)
            out = self(clip)
            terms, logged = self.loss_terms_of(out, clip)
        loss = self.objective_step(self.optimizers(), terms, negative, lambda inputs: self(inputs).frame, logged)
        self.log_step(logged, loss, batch_size=n)
        if out is not None:
            # the losses and the reads used the memories before this step's update, as in MNAD
            self.net.appearance_memory.update_(out.appearance_read)
            if out.motion_read is not None and self.net.motion_memory is not None:
                self.net.motion_memory.update_(out.motion_read)

    # ------------------------------------------------------------------ signals
    def frame_signals(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The max-patch signals, the whole frame's flow error and the prediction's PSNR (memories read only)."""
        clip = self.clip_of(batch)
        out = self(clip)
        return patch_signals(self, out.frame, clip.target, out.flow, self.flow_target(clip), self.patch)

    def sample_panels(self, batch: Mapping[str, Any]) -> dict[str, panels.Panel]:
        """Last input, prediction, target, error map, the target and predicted flows and the flow error."""
        clip = self.clip_of(batch)
        out = self(clip)
        target = self.flow_target(clip)
        return {
            "last input": panels.image(clip.last),
            "prediction": panels.image(out.frame),
            "target": panels.image(clip.target),
            "error": panels.error_map(out.frame, clip.target),
            "flow target": panels.flow(target),
            "predicted flow": panels.flow(out.flow),
            "flow error": panels.heatmap((out.flow.float() - target.float()).square().mean(dim=1)),
        }
