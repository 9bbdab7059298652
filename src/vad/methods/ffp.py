"""FFP — future frame prediction (Liu, Luo, Lian, Gao, CVPR 2018), the faithful version.

From t input frames a U-Net predicts frame t+1; the generator is trained with intensity, gradient, optical-flow and
LSGAN adversarial losses against a PatchGAN discriminator. The anomaly score is the per-video min-max normalised
negative PSNR of the prediction. A second signal, ``patch_max``, is the largest mean squared error over the windows
of the frame (a local error that a whole-frame PSNR dilutes; AMC's max-patch score on the intensity error),
recorded beside the PSNR. ``FFP(score={"patch_max": 1})`` scores with it alone; on the command line, where
overrides merge into the configured weights, ``model.score='{psnr: 0, patch_max: 1}'``.

Two defects of the public PyTorch ports are not reproduced: the flow loss reaches the generator through the frozen
flow estimator (the ports detach both flows, so their flow term has zero gradient; a non-differentiable estimator
such as ``flow=dis`` is refused for the same reason), and the estimator receives the frames in the colour order and
range it expects (``vad.flow`` handles the conversion from [-1, 1]).

    python -m vad.train model=ffp dataset=ped2 experiment=ffp_ped2
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from vad.evaluation.patch import check_patch, max_patch
from vad.flow import FlowEstimator
from vad.methods import losses, panels
from vad.methods.base import Clip, FrozenNet
from vad.methods.frame_predictor import FLOW_FOR_LOSS, FramePredictor, Prediction
from vad.nets import UNet

#: the windows of the ``patch_max`` signal when ``model.patch`` does not set them
DEFAULT_PATCH: Mapping[str, int] = {"window": 16, "stride": 4}


class FFP(FramePredictor):
    """FFP generator + discriminator with manual G then D steps (see :class:`FramePredictor`).

    Args:
        channels: image channels (1 or 3).
        clip_len: t + 1 (t input frames, the last frame is the target).
        generator: keyword arguments of :class:`vad.nets.UNet` (features, depth, norm, relu_after_upconv, init).
        discriminator: keyword arguments of :class:`vad.nets.PatchDiscriminator`.
        loss: weights of ``intensity``, ``gradient``, ``flow``, ``adversarial``.
        optim: ``lr_g``, ``lr_d``, ``betas``, ``milestones`` (iterations), ``gamma``.
        score: fusion weights of the ``psnr`` and ``patch_max`` signals (default ``{psnr: -1}``).
        patch: ``window`` (default 16) and ``stride`` (default 4) in pixels of the ``patch_max`` signal: the mean
            squared error of the prediction (on the [0, 1] scale of the PSNR, channels averaged) in each ``window`` x
            ``window`` patch taken every ``stride`` pixels without padding, and its maximum over the patches (see
            ``vad.evaluation.patch.max_patch``). The window must fit in the frame.
        frozen: ``{"flow": estimator}``, a differentiable ``vad.flow`` estimator, required when the flow weight is
            not 0 (config group ``flow``).
        grad_clip: max gradient norm per optimiser step.
        channels_last: run the convolutions in channels-last memory format (see VADModule).
    """

    signals = ("psnr", "patch_max", "intensity_error", "gradient_error")
    loss_terms = ("intensity", "gradient", "flow", "adversarial")
    default_loss: ClassVar[Mapping[str, float]] = {"intensity": 1.0, "gradient": 1.0, "flow": 2.0, "adversarial": 0.05}
    frozen_nets: ClassVar[Mapping[str, FrozenNet]] = {"flow": FLOW_FOR_LOSS}
    default_channels_last = True

    def __init__(self, *, patch: Mapping[str, int] | None = None, **common: Any) -> None:
        patch_config = check_patch(patch, DEFAULT_PATCH)
        # the flow term's per-frame error is a signal only when there is a flow estimator to compute it
        has_flow = (common.get("frozen") or {}).get("flow") is not None
        self.signals = type(self).signals + (("flow_error",) if has_flow else ())
        super().__init__(**common)
        self.patch = patch_config
        self.save_hyperparameters(ignore=["frozen"])

    @property
    def flow(self) -> FlowEstimator | None:
        """The frozen flow estimator of the flow term, or None."""
        return self.frozen_net("flow")

    def build_generator(self, config: dict[str, Any]) -> UNet:
        return UNet(self.input_frames * self.channels, self.channels, **config)

    def forward_clip(self, clip: Clip) -> Prediction:
        return Prediction(self.generator(clip.stacked))

    def frame_signals(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Per frame, from one prediction: ``psnr``, ``patch_max``, and the per-frame values of the loss terms,
        ``intensity_error`` (L_int), ``gradient_error`` (L_gd) and, with a flow estimator, ``flow_error`` (L_op), so
        the FFP README's fused score alpha L_int + beta L_grad + gamma L_flow is a ``model.score``: (N,) each."""
        return self._signals_and_error(batch)[0]

    def test_signals_and_maps(self, batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The signals and the per-pixel squared error (:meth:`error_maps`) from one prediction: FFP's test is
        stateless, so the pixel-level metrics cost no second forward pass."""
        return self._signals_and_error(batch)

    def _signals_and_error(self, batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        clip = self.clip_of(batch)
        prediction = self.forward_clip(clip).frame.float()
        target = clip.target.float()
        error = losses.squared_error_map(prediction, target)  # the squared error of the PSNR, per pixel
        patch = max_patch(error, window=self.patch["window"], stride=self.patch["stride"])
        signals = {
            "psnr": losses.psnr(prediction, target),
            "patch_max": patch.select,
            "intensity_error": losses.intensity_loss(prediction, target, reduction="none"),
            "gradient_error": losses.gradient_loss(prediction, target, reduction="none"),
        }
        if "flow_error" in self.signals:
            last = clip.last.float()
            difference = self.flow(last, prediction) - self.flow(last, target)
            signals["flow_error"] = difference.abs().flatten(1).mean(dim=1)
        return signals, error

    def generator_terms(self, prediction: Prediction, clip: Clip) -> dict[str, torch.Tensor]:
        frame = prediction.frame
        terms: dict[str, torch.Tensor] = {}
        if self.weight("intensity"):
            terms["intensity"] = losses.intensity_loss(frame, clip.target)
        if self.weight("gradient"):
            terms["gradient"] = losses.gradient_loss(frame, clip.target)
        if self.weight("flow"):
            flow = self.flow
            with torch.no_grad():
                flow_target = flow(clip.last, clip.target)
            # The gradient must reach the generator through the frozen estimator: no detach on the prediction.
            terms["flow"] = losses.flow_loss(flow(clip.last, frame), flow_target)
        return terms

    def sample_panels(self, batch: Mapping[str, Any]) -> dict[str, panels.Panel]:
        """Last input, prediction, target, error map and, with a flow estimator, the flows of the flow term."""
        shown = super().sample_panels(batch)
        if self.flow is not None:
            clip = self.split_clip(batch["frames"])
            shown["flow (last → target)"] = panels.flow(self.flow(clip.last, clip.target))
            shown["flow (last → prediction)"] = panels.flow(self.flow(clip.last, shown["prediction"].data))
        return shown
