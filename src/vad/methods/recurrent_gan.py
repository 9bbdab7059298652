"""The objective r-GAN and r-GAN* share (Lu, Yu, Reddy, Wang, ECCV 2020, supplementary): a recurrent frame
predictor trained with L1 + (1 - MS-SSIM) / 2 + gradient difference + an LSGAN PatchGAN term, scored by the same
per-frame prediction loss (:class:`RecurrentGAN`). The methods differ in their generator only
(:mod:`vad.methods.rgan`, :mod:`vad.methods.rgan_latent`). May import the methods' base, frame predictor and losses.

    class RGAN(RecurrentGAN):
        def build_generator(self, config): return RecurrentUNet(self.channels, **config)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from vad.errors import ConfigError
from vad.methods import losses
from vad.methods.base import Clip
from vad.methods.frame_predictor import FramePredictor, Prediction

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


class RecurrentGAN(FramePredictor):
    """A recurrent frame predictor trained with r-GAN's objective; a subclass builds its generator (``model.generator``)
    and runs it on a clip (``build_generator``, ``forward_clip``).

    Args:
        channels: image channels (1 or 3).
        clip_len: t + 1 (t = 3 in the paper).
        image_size: the working size (H, W) (``${dataset.image_size}``); it fixes the MS-SSIM scales.
        generator: keyword arguments of the subclass's generator.
        discriminator: keyword arguments of :class:`vad.nets.PatchDiscriminator`.
        loss: weights of ``l1``, ``msssim``, ``gradient``, ``intensity`` (the prediction loss, also the score; the
            paper's is the first three) and ``adversarial``.
        msssim: ``scales`` (``auto``: as many as the size allows, at most 5), ``kernel_size``, ``sigma``.
        optim: ``lr_g``, ``lr_d``, ``betas``, ``milestones`` (iterations), ``gamma``.
        score: fusion weights of ``prediction_loss`` and ``psnr``.
        grad_clip: max gradient norm per optimiser step.
        channels_last: run the convolutions in channels-last memory format.
        common: the other arguments every method takes, see :class:`~vad.methods.base.VADModule`.
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
    default_clip_len = 4
    default_channels_last = True

    def __init__(
        self,
        *,
        image_size: Sequence[int] = (256, 256),
        msssim: Mapping[str, Any] | None = None,
        **common: Any,
    ) -> None:
        msssim = resolve_msssim(msssim, image_size)
        super().__init__(**common)
        if not any(self.weight(term) for term in PREDICTION_TERMS):
            raise ConfigError(f"model.loss: weight at least one of {list(PREDICTION_TERMS)} (the prediction loss)")
        self.image_size = tuple(int(s) for s in image_size)
        self.msssim = msssim
        self.save_hyperparameters()

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
