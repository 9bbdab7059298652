"""r-GAN — the recurrent frame predictor of "Few-shot Scene-adaptive Anomaly Detection" (Lu, Yu, Reddy, Wang,
ECCV 2020, supplementary), trained as a plain (not meta-learned) detector.

Each of t = 3 input frames goes through the FFP U-Net; a ConvLSTM reads the U-Net's per-frame predictions in order,
carrying its state across the steps, and its final hidden state yields the prediction of frame t+1
(:class:`vad.nets.rgan.RecurrentUNet`). The generator minimises L1 + (1 - MS-SSIM) / 2 + gradient difference (the
paper's eq. 2; Mathieu et al.'s form without padding) + an LSGAN adversarial term against FFP's PatchGAN
discriminator (eq. 3: D minimises 0.5 (D(G) - 1)^2 + 0.5 D(P)^2). The per-frame anomaly score is the same
prediction loss on the test frame (higher = more anomalous), min-max normalised per video; the PSNR of the
prediction is a second signal.

What this fixes of the released code (meta-training only; there is no released test code): the ConvLSTM state
persists across the time steps (the released generator re-initialises it inside its time loop, so it predicts from
the last frame alone); the discriminator is the paper's LSGAN (the code uses BCE with 0.9 / 0.1 labels); the
gradient difference term of the paper is part of the loss (the code leaves it out). Kept from the code: Adam with
betas (0.5, 0.999), G 2e-4, D 1e-5. The adversarial weight is FFP's 0.05 (same discriminator and U-Net family;
the released code weights its BCE term 1). MS-SSIM uses as many scales as the working size allows (5 need 176 px;
3 at 64x64, 4 at 128x128), recorded in the run's hyper-parameters (``msssim``).

    python -m vad.train model=rgan dataset=ped2                  # or experiment=rgan_ped2 trainer=gpu (256x256)
    python -m vad.train experiment=rgan_ped2_cpu paths.data_dir=<folder holding ped2>
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from vad.errors import ConfigError
from vad.methods import losses
from vad.methods.base import Clip, FramePredictor, Prediction
from vad.nets.rgan import RecurrentUNet
from vad.reporting import panels

#: the terms of the per-frame prediction loss (the score), as opposed to the adversarial term; ``intensity`` (the
#: squared error, FFP's term) is not in the paper's loss and is off by default
PREDICTION_TERMS = ("l1", "msssim", "gradient", "intensity")


def resolve_msssim(msssim: Mapping[str, Any] | None, image_size: Sequence[int]) -> dict[str, Any]:
    """MS-SSIM settings with ``scales: auto`` resolved for the working size (the smaller side of ``image_size``)."""
    settings = {"scales": "auto", "kernel_size": 11, "sigma": 1.5} | dict(msssim or {})
    unknown = sorted(set(settings) - {"scales", "kernel_size", "sigma"})
    if unknown:
        raise ConfigError(f"model.msssim has unknown key(s) {unknown}; valid: scales, kernel_size, sigma")
    side = min(int(s) for s in image_size)
    try:
        most = losses.msssim_scales(side, settings["kernel_size"])
    except ValueError as exc:
        raise ConfigError(f"model.msssim: {exc}; use larger frames or a smaller model.msssim.kernel_size") from None
    if settings["scales"] == "auto":
        settings["scales"] = most
    elif not (isinstance(settings["scales"], int) and 1 <= settings["scales"] <= most):
        raise ConfigError(
            f"model.msssim.scales={settings['scales']!r}: {side}-px frames allow 1..{most} scales; use auto or one of "
            "those"
        )
    settings["betas"] = list(losses.msssim_betas(settings["scales"]))
    return settings


class RGAN(FramePredictor):
    """r-GAN: U-Net per frame + ConvLSTM generator, LSGAN PatchGAN discriminator (see the module docstring).

    Args:
        channels: image channels (1 or 3).
        clip_len: t + 1 (t = 3 in the paper).
        image_size: the working size (H, W) (``${dataset.image_size}``); it fixes the MS-SSIM scales.
        generator: keyword arguments of :class:`vad.nets.rgan.RecurrentUNet` (features, depth, hidden,
            kernel_size, norm, relu_after_upconv, init, residual).
        discriminator: keyword arguments of :class:`vad.nets.PatchDiscriminator`.
        loss: weights of ``l1``, ``msssim``, ``gradient``, ``intensity`` (the prediction loss, also the score; the
            paper's is the first three) and ``adversarial``.
        msssim: ``scales`` (``auto``: as many as the size allows, at most 5), ``kernel_size``, ``sigma``.
        optim: ``lr_g``, ``lr_d``, ``betas``, ``milestones`` (iterations), ``gamma``.
        score: fusion weights of ``prediction_loss`` and ``psnr``.
        grad_clip: max gradient norm per optimiser step.
        channels_last: run the convolutions in channels-last memory format.
    """

    signals = ("prediction_loss", "psnr")
    loss_terms = (*PREDICTION_TERMS, "adversarial")
    default_loss: ClassVar[Mapping[str, float]] = {"l1": 1.0, "msssim": 1.0, "gradient": 1.0, "adversarial": 0.05}
    default_score: ClassVar[Mapping[str, float]] = {"prediction_loss": 1.0}
    default_optim: ClassVar[Mapping[str, Any]] = {
        "lr_g": 2e-4,
        "lr_d": 1e-5,
        "betas": (0.5, 0.999),
        "milestones": (),
        "gamma": 0.1,
    }

    def __init__(
        self,
        *,
        channels: int = 3,
        clip_len: int = 4,
        image_size: Sequence[int] = (256, 256),
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
        loss: Mapping[str, float] | None = None,
        msssim: Mapping[str, Any] | None = None,
        optim: Mapping[str, Any] | None = None,
        score: Mapping[str, float] | None = None,
        grad_clip: float | None = None,
        channels_last: bool = True,
    ) -> None:
        msssim = resolve_msssim(msssim, image_size)
        super().__init__(
            channels=channels,
            clip_len=clip_len,
            generator=generator,
            discriminator=discriminator,
            loss=loss,
            optim=optim,
            score=score,
            grad_clip=grad_clip,
            channels_last=channels_last,
        )
        if not any(self.weight(term) for term in PREDICTION_TERMS):
            raise ConfigError(f"model.loss: weight at least one of {list(PREDICTION_TERMS)} (the prediction loss)")
        self.image_size = tuple(int(s) for s in image_size)
        self.msssim = msssim
        self.save_hyperparameters()

    def build_generator(self, config: dict[str, Any]) -> nn.Module:
        return RecurrentUNet(self.channels, **config)

    def forward_clip(self, clip: Clip) -> Prediction:
        frame, steps = self.generator(clip.inputs, return_steps=True)
        return Prediction(frame, {"steps": steps})

    # ------------------------------------------------------------------ the prediction loss, per batch or per frame
    def prediction_terms(
        self, frame: torch.Tensor, target: torch.Tensor, reduction: losses.Reduction = "mean"
    ) -> dict[str, torch.Tensor]:
        """The unweighted L1, MS-SSIM, gradient-difference and squared-error terms whose weight is not 0."""
        if frame.shape[-2:] != self.image_size:
            raise ConfigError(
                f"frames of {tuple(frame.shape[-2:])} px reach a model configured for model.image_size="
                f"{list(self.image_size)} (its MS-SSIM scales); set model.image_size=${{dataset.image_size}}"
            )
        terms: dict[str, torch.Tensor] = {}
        if self.weight("l1"):
            terms["l1"] = losses.l1_loss(frame, target, reduction)
        if self.weight("intensity"):
            terms["intensity"] = losses.intensity_loss(frame, target, reduction)
        if self.weight("msssim"):
            ms = self.msssim
            terms["msssim"] = losses.msssim_loss(
                frame, target, ms["scales"], ms["kernel_size"], ms["sigma"], reduction=reduction
            )
        if self.weight("gradient"):
            terms["gradient"] = losses.gradient_loss(frame, target, zero_pad=False, reduction=reduction)
        return terms

    def generator_terms(self, prediction: Prediction, clip: Clip) -> dict[str, torch.Tensor]:
        return self.prediction_terms(prediction.frame, clip.target)

    def frame_signals(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``prediction_loss``: the weighted prediction terms of ``model.loss`` (L1, MS-SSIM, gradient difference,
        squared error) of each frame (higher = more anomalous); ``psnr``: the PSNR of the prediction."""
        clip = self.split_clip(batch["frames"])
        frame = self.forward_clip(clip).frame.float()
        target = clip.target.float()
        terms = self.prediction_terms(frame, target, reduction="none")
        per_frame = sum(self.weight(name) * value for name, value in terms.items())
        return {"prediction_loss": per_frame, "psnr": losses.psnr(frame, target)}  # type: ignore[dict-item]

    def sample_panels(self, batch: Mapping[str, Any]) -> dict[str, panels.Panel]:
        """Last input, prediction, target, error map, then the U-Net's prediction from each input frame (what the
        ConvLSTM reads)."""
        shown = super().sample_panels(batch)
        steps = self.forward_clip(self.split_clip(batch["frames"])).extras["steps"]
        for k in range(steps.shape[1]):
            shown[f"U-Net, frame {k + 1}"] = panels.image(steps[:, k])
        return shown
