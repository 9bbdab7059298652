"""FFP — future frame prediction (Liu, Luo, Lian, Gao, CVPR 2018), the faithful version.

From t input frames a U-Net predicts frame t+1; the generator is trained with intensity, gradient, optical-flow and
LSGAN adversarial losses against a PatchGAN discriminator. The anomaly score is the per-video min-max normalised
negative PSNR of the prediction.

Two defects of the public PyTorch ports are not reproduced: the flow loss reaches the generator through the frozen
flow estimator (the ports detach both flows, so their flow term has zero gradient), and the estimator receives the
frames in the colour order and range it expects (``vad.flow`` handles the conversion from [-1, 1]).

    python -m vad.train model=ffp dataset=ped2 experiment=ffp_ped2
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vad import losses
from vad.errors import ConfigError
from vad.methods.base import VADModule
from vad.nets import PatchDiscriminator, UNet


class FFP(VADModule):
    """FFP generator + discriminator with manual G then D steps.

    Args:
        channels: image channels (1 or 3).
        clip_len: t + 1 (t input frames, the last frame is the target).
        generator: keyword arguments of :class:`vad.nets.UNet` (features, depth, norm, relu_after_upconv, init).
        discriminator: keyword arguments of :class:`vad.nets.PatchDiscriminator`; not built when the adversarial
            weight is 0.
        loss: weights of ``intensity``, ``gradient``, ``flow``, ``adversarial``.
        optim: ``lr_g``, ``lr_d``, ``betas``, ``milestones`` (iterations), ``gamma``.
        score: fusion weights of the ``psnr`` signal (``{psnr: -1}``).
        flow: a frozen ``vad.flow`` estimator, required when the flow weight is not 0. It is held outside the module
            tree: it is not saved in checkpoints, not seen by DDP, and never optimised.
        grad_clip: max gradient norm per optimiser step.
        channels_last: run the convolutions in channels-last memory format (see VADModule).
    """

    signals = ("psnr",)
    loss_terms = ("intensity", "gradient", "flow", "adversarial")

    def __init__(
        self,
        *,
        channels: int = 3,
        clip_len: int = 5,
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
        loss: Mapping[str, float] | None = None,
        optim: Mapping[str, Any] | None = None,
        score: Mapping[str, float] | None = None,
        flow: nn.Module | None = None,
        grad_clip: float | None = None,
        channels_last: bool = True,
    ) -> None:
        loss = dict(loss or {"intensity": 1.0, "gradient": 1.0, "flow": 2.0, "adversarial": 0.05})
        super().__init__(
            channels=channels,
            clip_len=clip_len,
            loss=loss,
            score=score or {"psnr": -1.0},
            grad_clip=grad_clip,
            channels_last=channels_last,
        )
        unknown = sorted(set(loss) - set(self.loss_terms))
        if unknown:
            raise ConfigError(f"model.loss has unknown term(s) {unknown}; FFP's terms are {list(self.loss_terms)}")
        if clip_len < 2:
            raise ConfigError(f"model.clip_len must be >= 2 for frame prediction (t inputs + 1 target), got {clip_len}")
        if self.weight("flow") != 0 and flow is None:
            raise ConfigError(
                f"model.loss.flow={self.weight('flow')} needs a flow estimator: choose flow=lk (CPU, weight-free) or "
                "flow=flownet2sd, or set model.loss.flow=0"
            )
        self.optim = {"lr_g": 1e-4, "lr_d": 1e-5, "betas": (0.9, 0.999), "milestones": (), "gamma": 0.1}
        self.optim.update(optim or {})
        self.save_hyperparameters(ignore=["flow"])
        t = clip_len - 1
        self.generator = UNet(t * channels, channels, **(generator or {}))
        self.discriminator = (
            PatchDiscriminator(channels, **(discriminator or {})) if self.weight("adversarial") != 0 else None
        )
        # Not a submodule (see Args); `_apply` keeps it on the module's device and dtype.
        self._flow = [flow.eval().requires_grad_(False)] if flow is not None else []

    @property
    def flow(self) -> nn.Module | None:
        return self._flow[0] if self._flow else None

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> FFP:
        super()._apply(fn, *args, **kwargs)
        for estimator in self._flow:
            estimator._apply(fn, *args, **kwargs)
        return self

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        betas = tuple(self.optim["betas"])
        milestones: Sequence[int] = list(self.optim["milestones"] or [])
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.optim["lr_g"], betas=betas)
        optimizers = [opt_g]
        if self.discriminator is not None:
            optimizers.append(torch.optim.Adam(self.discriminator.parameters(), lr=self.optim["lr_d"], betas=betas))
        schedulers = [
            {
                "scheduler": torch.optim.lr_scheduler.MultiStepLR(
                    opt, milestones=milestones, gamma=self.optim["gamma"]
                ),
                "interval": "step",
                "name": f"lr-{net}",
            }
            for opt, net in zip(optimizers, ("generator", "discriminator"), strict=False)
        ]
        return optimizers, schedulers

    @staticmethod
    def split_clip(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, T, C, H, W) clip -> inputs (N, (T-1)*C, H, W), last input frame (N, C, H, W), target (N, C, H, W)."""
        return frames[:, :-1].flatten(1, 2), frames[:, -2], frames[:, -1]

    def generator_terms(
        self, prediction: torch.Tensor, target: torch.Tensor, last: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Unweighted generator loss terms; a term whose weight is 0 is not computed."""
        terms: dict[str, torch.Tensor] = {}
        if self.weight("intensity"):
            terms["intensity"] = losses.intensity_loss(prediction, target)
        if self.weight("gradient"):
            terms["gradient"] = losses.gradient_loss(prediction, target)
        if self.weight("flow"):
            flow = self.flow
            with torch.no_grad():
                flow_target = flow(last, target)
            # The gradient must reach the generator through the frozen estimator: no detach on the prediction.
            terms["flow"] = losses.flow_loss(flow(last, prediction), flow_target)
        if self.weight("adversarial"):
            terms["adversarial"] = losses.lsgan_generator_loss(self.discriminator(prediction))
        return terms

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        inputs, last, target = self.split_clip(batch["frames"])
        n = inputs.shape[0]
        optimizers = self.optimizers()
        opt_g = optimizers[0] if isinstance(optimizers, list) else optimizers

        # Generator step. D's parameters are excluded from the graph (toggle) so G's adversarial term leaves no
        # gradient in D, and the D step below zeroes D's gradients before its own backward anyway.
        self.toggle_optimizer(opt_g)
        prediction = self.generator(inputs)
        terms = self.generator_terms(prediction, target, last)
        loss_g = self.weighted_sum(terms)
        self.optimise(opt_g, loss_g)
        self.untoggle_optimizer(opt_g)
        logged = dict(terms)
        logged["g"] = loss_g

        # Discriminator step on the detached prediction; it does not advance global_step (iterations count G steps).
        if self.discriminator is not None:
            opt_d = optimizers[1]
            self.toggle_optimizer(opt_d)
            loss_d = losses.lsgan_discriminator_loss(
                self.discriminator(target), self.discriminator(prediction.detach())
            )
            self.check_finite({"discriminator": loss_d})
            self.optimise(opt_d, loss_d, counts_as_step=False)
            self.untoggle_optimizer(opt_d)
            logged["d"] = loss_d
        self.log_terms(logged, batch_size=n)
        self.log("train/loss", loss_g.detach(), prog_bar=True, batch_size=n, on_step=True, on_epoch=False)

    # ------------------------------------------------------------------ test signals
    def predict_next(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, T, C, H, W) clip -> predicted last frame (N, C, H, W) from the first T-1 frames."""
        inputs, _, _ = self.split_clip(frames)
        return self.generator(inputs)

    def frame_signals(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        frames = batch["frames"]
        prediction = self.predict_next(frames)
        return {"psnr": losses.psnr(prediction.float(), frames[:, -1].float())}

    def sample_images(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        frames = batch["frames"]
        return {"input": frames[:, -2], "prediction": self.predict_next(frames), "target": frames[:, -1]}
