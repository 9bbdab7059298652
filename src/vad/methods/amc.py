"""AMC — appearance-motion correspondence (Nguyen & Meunier, ICCV 2019), single-frame version.

One frame I_t goes through a shared encoder; an appearance decoder without skips reconstructs I_t and a motion
decoder with U-Net skips predicts the optical flow from I_t to I_{t+1} as (dx, dy, magnitude). The flow targets
come from the flow-target cache (:mod:`vad.data.flows`; OpenCV DIS by default, ``flow_targets=flownet2sd`` for
FlowNet2-SD as in the paper). A PatchGAN discriminator sees [frame, flow]; the generator loss is
0.25 adv + intensity + gradient + 2 L1(flow), Adam G 2e-4, D 2e-5, betas (0.5, 0.9).

Score (the max-patch score, :func:`vad.evaluation.patch.max_patch` / :func:`vad.evaluation.patch.patch_score`): per
frame the window (16x16, stride 4 in the paper at 128x192) with the largest flow error, the intensity error in that
window, and
S = log(w_F S_F) + lambda_S log(w_I S_I) with w the inverse means of S_F and S_I over the normal training frames,
computed once after training and stored in the checkpoint (``training_means``), lambda_S = 0.2. The signals
``patch_flow_error``, ``patch_intensity_error``, ``flow_error`` (the whole frame's) and ``psnr`` (of the
reconstruction) are recorded beside ``patch_score``.

The suite's clips score their last frame: an AMC clip is (I_t, I_{t+1}) with ``clip_len = 2``, and the scored
frame index is t + 1 (the paper labels the same evidence t); the first frame of each video is not scored.

    python -m vad.train model=amc dataset=ped2            (experiment=amc_ped2 for the paper's settings)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from vad.errors import ConfigError
from vad.evaluation.patch import check_patch
from vad.methods import losses, panels
from vad.methods.amc_signals import FLOW_TARGETS, PATCH_DEFAULTS, PATCH_SIGNALS, patch_signals, require_flows
from vad.methods.base import Clip, FrozenNet
from vad.methods.frame_predictor import FramePredictor, Prediction
from vad.nets.amc import AMCNet


def with_magnitude(flow: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) flow -> (N, 3, H, W) (dx, dy, |flow|), AMC's motion target."""
    return torch.cat([flow, flow.norm(dim=1, keepdim=True)], dim=1)


class AMC(FramePredictor):
    """AMC generator (:class:`vad.nets.amc.AMCNet`) + PatchGAN on [frame, flow] with manual G then D steps.

    Args:
        channels: image channels (1 or 3).
        clip_len: 2 (the frame and the next one, whose flow is the motion target).
        generator: keyword arguments of :class:`vad.nets.amc.AMCNet` (features, depth, dropout).
        discriminator: keyword arguments of :class:`vad.nets.PatchDiscriminator`.
        loss: weights of ``intensity``, ``gradient``, ``flow`` (L1 to the (dx, dy, magnitude) target),
            ``adversarial``.
        optim: ``lr_g``, ``lr_d``, ``betas``, ``milestones``, ``gamma``.
        patch: ``window``, ``stride`` of the max-patch score, ``lam`` (lambda_S).
        score: fusion weights of the signals (default ``{patch_score: 1}``).
        frozen: ``{"flow_targets": estimator}`` (config group ``flow_targets``), required.
        common: the other arguments every method takes, see :class:`~vad.methods.base.VADModule`.
    """

    signals = PATCH_SIGNALS
    loss_terms = ("intensity", "gradient", "flow", "adversarial")
    default_loss: ClassVar[Mapping[str, float]] = {"intensity": 1.0, "gradient": 1.0, "flow": 2.0, "adversarial": 0.25}
    default_score: ClassVar[Mapping[str, float]] = {"patch_score": 1.0}
    default_optim: ClassVar[Mapping[str, Any]] = {
        "lr_g": 2e-4,
        "lr_d": 2e-5,
        "betas": (0.5, 0.9),
        "milestones": (),
        "gamma": 0.1,
    }
    frozen_nets: ClassVar[Mapping[str, FrozenNet]] = {"flow_targets": FLOW_TARGETS}
    training_mean_names = ("patch_flow_error", "patch_intensity_error")
    default_clip_len = 2
    default_channels_last = True

    def __init__(self, *, patch: Mapping[str, Any] | None = None, **common: Any) -> None:
        clip_len = self.default_clip_len if common.get("clip_len") is None else common["clip_len"]
        if clip_len != 2:
            raise ConfigError(f"model.clip_len must be 2 for AMC (the frame and the next one), got {clip_len}")
        super().__init__(**common)
        if self.frozen_net("flow_targets") is None:
            raise ConfigError(f"AMC needs flow targets: choose {FLOW_TARGETS.choices}")
        self.patch = check_patch(patch, PATCH_DEFAULTS)
        self.save_hyperparameters(ignore=["frozen"])

    def clip_requests(self) -> dict[str, Any]:
        return {"flows": self.frozen_net("flow_targets")}

    def output_target(self, clip: Clip) -> torch.Tensor:
        return clip.last

    def training_clip(self, batch: Mapping[str, Any]) -> Clip:
        # A pseudo-anomaly plug-in's not_reconstruct objective gives the normal version of the clip's LAST frame as
        # the target; AMC reconstructs the frame before it, whose normal version the plug-in does not provide.
        pseudo = batch.get("pseudo")
        if pseudo is not None and "pseudo_negative" in batch:
            trained_towards_normal = pseudo.bool() & (batch["pseudo_negative"] <= 0)
            if bool(trained_towards_normal.any()):
                raise ConfigError(
                    "AMC reconstructs its input frame, and pseudo.objective=not_reconstruct only provides the normal "
                    "version of the next frame: use dataset.pseudo.objective=negative with AMC"
                )
        return super().training_clip(batch)

    # ------------------------------------------------------------------ the generator and its terms
    def build_generator(self, config: dict[str, Any]) -> AMCNet:
        return AMCNet(self.channels, **config)

    @property
    def discriminator_channels(self) -> int:
        return self.channels + 3

    def forward_clip(self, clip: Clip) -> Prediction:
        frame, flow = self.generator(clip.last)
        return Prediction(frame, {"flow": flow})

    def motion_target(self, clip: Clip) -> torch.Tensor:
        """(dx, dy, magnitude) of the flow from the input frame to the next one: (N, 3, H, W)."""
        return with_magnitude(require_flows(self, clip)[:, -1])

    def generator_terms(self, prediction: Prediction, clip: Clip) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if self.weight("intensity"):
            terms["intensity"] = losses.intensity_loss(prediction.frame, clip.last)
        if self.weight("gradient"):
            terms["gradient"] = losses.gradient_loss(prediction.frame, clip.last)
        if self.weight("flow"):
            terms["flow"] = losses.l1_loss(prediction.extras["flow"], self.motion_target(clip))
        return terms

    def real_sample(self, clip: Clip) -> torch.Tensor:
        return torch.cat([clip.last, self.motion_target(clip).to(clip.last.dtype)], dim=1)

    def fake_sample(self, prediction: Prediction) -> torch.Tensor:
        return torch.cat([prediction.frame, prediction.extras["flow"]], dim=1)

    # ------------------------------------------------------------------ signals
    def frame_signals(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The max-patch signals, the whole frame's flow error and the reconstruction's PSNR."""
        clip = self.clip_of(batch)
        prediction = self.forward_clip(clip)
        return patch_signals(
            self, prediction.frame, clip.last, prediction.extras["flow"], self.motion_target(clip), self.patch
        )

    def sample_panels(self, batch: Mapping[str, Any]) -> dict[str, panels.Panel]:
        """The frame, its reconstruction and error, the target flow, the predicted flow and the flow error."""
        clip = self.clip_of(batch)
        prediction = self.forward_clip(clip)
        target = self.motion_target(clip)
        flow = prediction.extras["flow"]
        return {
            "frame": panels.image(clip.last),
            "reconstruction": panels.image(prediction.frame),
            "intensity error": panels.error_map(prediction.frame, clip.last),
            "flow target": panels.flow(target[:, :2]),
            "predicted flow": panels.flow(flow[:, :2]),
            "flow error": panels.heatmap((flow - target).square().mean(dim=1)),
        }
