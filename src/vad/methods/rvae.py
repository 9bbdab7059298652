"""r-VAE — the variational recurrent baseline of "Few-shot Scene-adaptive Anomaly Detection" (Lu, Yu, Reddy, Wang,
ECCV 2020, supplementary), which exists only in the paper.

A VGG16-like convolutional encoder gives the posterior q(z | I_T) of each of the t = 3 input frames, a decoder
predicts the next frame I_{T+1} from z, and a ConvLSTM reads those t predictions in order, its state carried across
the steps, to predict frame t+1 (:class:`vad.nets.vae.RecurrentVAE`). The paper's objective is, summed over T, the
evidence lower bound E[log p(I_{T+1} | z)] - KL(q(z | I_T) || N(0, I)); here, with a Gaussian likelihood and means
instead of sums:

    L = l_int MSE(P, I_{t+1}) + l_step mean_T MSE(P_T, I_{T+1}) + beta KL

where P is the ConvLSTM's prediction, P_T the decoder's from z_T, and KL the posterior's KL divergence summed over
the latent elements and divided by the image's elements C H W (mean over T and the batch), so that beta is 2 sigma^2
for a likelihood of standard deviation sigma on the [-1, 1] scale: the default beta 0.02 is sigma = 0.1 (13 grey
levels). The KL term is logged on its own (``train/loss_kl``, unweighted). Signals: ``prediction_error`` (the MSE of
the prediction; the default score), ``kl`` (the frame's KL, same normalisation, mean over the t steps) and ``psnr``.
At test time z is the posterior mean, so scores are deterministic.

    python -m vad.train model=rvae dataset=ped2                  # or experiment=rvae_ped2 trainer=gpu
    python -m vad.train experiment=rvae_ped2_cpu paths.data_dir=<folder holding ped2>
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from vad.errors import ConfigError
from vad.methods import losses, panels
from vad.methods.base import Clip
from vad.methods.frame_predictor import FramePredictor, Prediction
from vad.nets.vae import RecurrentVAE


def kl_per_pixel(mu: torch.Tensor, logvar: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """Per sample, KL(q || N(0, I)) summed over one step's latent elements, divided by the elements of one frame and
    averaged over the t steps: mu, logvar (N, t, L, h, w), frame (N, C, H, W) -> (N,)."""
    per_element = losses.gaussian_kl(mu.flatten(0, 1), logvar.flatten(0, 1), "none").unflatten(0, mu.shape[:2])
    return per_element.mean(dim=1) * (mu[0, 0].numel() / frame[0].numel())


class RVAE(FramePredictor):
    """r-VAE: VGG-like VAE per frame + ConvLSTM over its predictions, no discriminator (see the module docstring).

    Args:
        channels: image channels (1 or 3).
        clip_len: t + 1 (t = 3 in the paper).
        generator: keyword arguments of :class:`vad.nets.vae.RecurrentVAE` (features, blocks, latent, hidden,
            kernel_size, residual).
        loss: weights of ``intensity`` (the ConvLSTM's prediction), ``step_intensity`` (the decoder's per-step
            predictions: the ELBO's likelihood) and ``kl`` (beta).
        optim: ``lr_g``, ``betas``, ``milestones`` (iterations), ``gamma``.
        score: fusion weights of ``prediction_error``, ``kl`` and ``psnr``.
        grad_clip: max gradient norm per optimiser step.
        channels_last: run the convolutions in channels-last memory format.
        common: the other arguments every method takes, see :class:`~vad.methods.base.VADModule`.
    """

    signals = ("prediction_error", "kl", "psnr")
    loss_terms = ("intensity", "step_intensity", "kl")
    default_loss: ClassVar[Mapping[str, float]] = {"intensity": 1.0, "step_intensity": 1.0, "kl": 0.02}
    default_score: ClassVar[Mapping[str, float]] = {"prediction_error": 1.0}
    default_clip_len = 4
    default_channels_last = True

    def __init__(self, **common: Any) -> None:
        super().__init__(**common)
        if not (self.weight("intensity") or self.weight("step_intensity")):
            raise ConfigError("model.loss: weight intensity or step_intensity (a VAE without a likelihood term)")
        self.save_hyperparameters()

    def build_generator(self, config: dict[str, Any]) -> nn.Module:
        return RecurrentVAE(self.channels, **config)

    def forward_clip(self, clip: Clip) -> Prediction:
        out = self.generator(clip.inputs)
        return Prediction(out.prediction, {"steps": out.steps, "mu": out.mu, "logvar": out.logvar})

    def generator_terms(self, prediction: Prediction, clip: Clip) -> dict[str, torch.Tensor]:
        extras = prediction.extras
        terms: dict[str, torch.Tensor] = {}
        if self.weight("intensity"):
            terms["intensity"] = losses.intensity_loss(prediction.frame, clip.target)
        if self.weight("step_intensity"):
            # P_T predicts I_{T+1}: the next input frame, and the target after the last one
            following = torch.cat([clip.inputs[:, 1:], clip.target[:, None]], dim=1)
            terms["step_intensity"] = losses.intensity_loss(extras["steps"], following)
        if self.weight("kl"):
            terms["kl"] = kl_per_pixel(extras["mu"], extras["logvar"], clip.target).mean()
        return terms

    def frame_signals(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        clip = self.split_clip(batch["frames"])
        prediction = self.forward_clip(clip)
        frame, target = prediction.frame.float(), clip.target.float()
        return {
            "prediction_error": losses.intensity_loss(frame, target, "none"),
            "kl": kl_per_pixel(prediction.extras["mu"].float(), prediction.extras["logvar"].float(), target),
            "psnr": losses.psnr(frame, target),
        }

    def sample_panels(self, batch: Mapping[str, Any]) -> dict[str, panels.Panel]:
        """Last input, prediction, target, error map, then the decoder's prediction from each input frame (what
        the ConvLSTM reads)."""
        shown = super().sample_panels(batch)
        steps = self.forward_clip(self.split_clip(batch["frames"])).extras["steps"]
        for k in range(steps.shape[1]):
            shown[f"VAE, frame {k + 1} → {k + 2}"] = panels.image(steps[:, k])
        return shown
