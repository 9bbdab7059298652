"""The frame predictor: a generator predicting the target frame of a clip, with an optional LSGAN PatchGAN
discriminator, the shape FFP, AMC, r-GAN and r-VAE share (:class:`FramePredictor`); and the frozen flow estimator a
flow loss backpropagates through (:data:`FLOW_FOR_LOSS`), which FFP and the pseudo-anomaly method declare.

    class MyPredictor(FramePredictor):
        def build_generator(self, config): return UNet(self.input_frames * self.channels, self.channels, **config)

May import the methods' base, optimisation and losses, ``vad.flow`` and ``vad.nets``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from vad.errors import ConfigError
from vad.flow import FlowEstimator
from vad.methods import losses
from vad.methods.base import Clip, FrozenNet, VADModule
from vad.methods.optimisation import multistep_schedulers
from vad.nets.patch_discriminator import PatchDiscriminator

#: a differentiable flow estimator whose gradient a flow term needs (FFP's, and any method with a flow loss)
FLOW_FOR_LOSS = FrozenNet(
    group="flow",
    what="flow estimator",
    terms=("flow",),
    gradient=True,
    kind=FlowEstimator,
    choices="flow=lk (CPU, weight-free) or flow=flownet2sd",
)


class Prediction(NamedTuple):
    """What a :class:`FramePredictor`'s generator makes of a clip: the predicted target ``frame`` (N, C, H, W) in
    [-1, 1] and whatever else its loss terms or sample panels need (``extras``: name -> tensor)."""

    frame: torch.Tensor
    extras: Mapping[str, torch.Tensor] = MappingProxyType({})


class FramePredictor(VADModule):
    """A generator that predicts the target frame of a clip, with an optional LSGAN PatchGAN discriminator.

    Per iteration: one generator step on the weighted sum of ``generator_terms`` plus, when
    ``model.loss.adversarial`` is not 0, the LSGAN term mean((D(P) - 1)^2 / 2); then one discriminator step on the
    real target against the detached prediction, mean((D(G) - 1)^2 / 2) + mean(D(P)^2 / 2), which does not advance
    ``global_step`` (iterations count generator steps). Adam for both nets; both learning rates are multiplied by
    ``gamma`` after each of ``milestones`` (iterations).

    A subclass declares ``signals`` / ``loss_terms`` / ``default_loss`` (with ``adversarial`` among the terms when it
    is trained adversarially) and implements

    - ``build_generator(config) -> nn.Module``: its generator from ``model.generator``, called once here before the
      discriminator is built (``self.channels`` and ``self.clip_len`` are set);
    - ``forward_clip(clip) -> Prediction``: the generator on a :class:`Clip`;
    - ``generator_terms(prediction, clip) -> {term: scalar}``: its unweighted terms, skipping a term whose weight
      is 0; the adversarial term is added here.

    Args:
        generator: keyword arguments of the generator (``build_generator``).
        discriminator: keyword arguments of :class:`vad.nets.PatchDiscriminator`; not built when the adversarial
            weight is 0.
        optim: ``lr_g``, ``lr_d``, ``betas``, ``milestones`` (iterations), ``gamma`` (default ``default_optim``).
        common: the arguments every method takes, see :class:`~vad.methods.base.VADModule`.
    """

    default_optim: ClassVar[Mapping[str, Any]] = {
        "lr_g": 1e-4,
        "lr_d": 1e-5,
        "betas": (0.9, 0.999),
        "milestones": (),
        "gamma": 0.1,
    }

    def __init__(
        self,
        *,
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
        optim: Mapping[str, Any] | None = None,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        unknown = sorted(set(optim or {}) - set(self.default_optim))
        if unknown:
            raise ConfigError(f"model.optim has unknown key(s) {unknown}; valid: {list(self.default_optim)}")
        self.optim = dict(self.default_optim) | dict(optim or {})
        self.generator = self.build_generator(dict(generator or {}))
        self.discriminator = (
            PatchDiscriminator(self.discriminator_channels, **(discriminator or {}))
            if self.weight("adversarial") != 0
            else None
        )

    # ------------------------------------------------------------------ subclasses implement these
    def build_generator(self, config: dict[str, Any]) -> nn.Module:
        """The generator from the ``model.generator`` keyword arguments."""
        raise NotImplementedError

    def forward_clip(self, clip: Clip) -> Prediction:
        """The generator's prediction of ``clip.target`` from ``clip.inputs``."""
        raise NotImplementedError

    def generator_terms(self, prediction: Prediction, clip: Clip) -> dict[str, torch.Tensor]:
        """Unweighted generator loss terms except the adversarial one; a term whose weight is 0 is not computed."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    @property
    def input_frames(self) -> int:
        """t, the number of input frames of a clip."""
        return self.clip_len - 1 if self.task == "prediction" else 1

    def predict(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.forward_clip(self.clip_of(batch)).frame

    # ------------------------------------------------------------------ what the discriminator sees
    @property
    def discriminator_channels(self) -> int:
        """Input channels of the discriminator: the image channels by default."""
        return self.channels

    def real_sample(self, clip: Clip) -> torch.Tensor:
        """What the discriminator sees as real: the target frame by default."""
        return clip.target

    def fake_sample(self, prediction: Prediction) -> torch.Tensor:
        """What the discriminator sees as generated (not detached): the predicted frame by default."""
        return prediction.frame

    def configure_optimizers(self) -> Any:
        betas = tuple(self.optim["betas"])
        milestones: Sequence[int] = list(self.optim["milestones"] or [])
        optimizers = [torch.optim.Adam(self.generator.parameters(), lr=self.optim["lr_g"], betas=betas)]
        if self.discriminator is not None:
            optimizers.append(torch.optim.Adam(self.discriminator.parameters(), lr=self.optim["lr_d"], betas=betas))
        named = list(zip(("generator", "discriminator"), optimizers, strict=False))
        return optimizers, multistep_schedulers(named, milestones, self.optim["gamma"])

    def all_generator_terms(self, prediction: Prediction, clip: Clip) -> dict[str, torch.Tensor]:
        """``generator_terms`` plus the adversarial term when its weight is not 0."""
        terms = self.generator_terms(prediction, clip)
        if self.weight("adversarial"):
            terms["adversarial"] = losses.lsgan_generator_loss(self.discriminator(self.fake_sample(prediction)))
        return terms

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        # Items of a pseudo-anomaly plug-in with the negative objective get only the bounded negative term; the others
        # (plain items, and pseudo items trained towards their normal target) the usual terms.
        usual, negative = self.split_pseudo(batch)
        n = batch["frames"].shape[0]
        optimizers = self.optimizers()
        opt_g = optimizers[0] if isinstance(optimizers, list) else optimizers

        # Generator step. D's parameters are excluded from the graph (toggle) so G's adversarial term leaves no
        # gradient in D, and the D step below zeroes D's gradients before its own backward anyway.
        self.toggle_optimizer(opt_g)
        terms: dict[str, torch.Tensor] = {}
        clip = prediction = None
        if usual is not None:
            clip = self.training_clip(usual)
            prediction = self.forward_clip(clip)
            terms = self.all_generator_terms(prediction, clip)
        logged: dict[str, torch.Tensor] = {}
        loss_g = self.objective_step(opt_g, terms, negative, lambda inputs: self.forward_clip(inputs).frame, logged)
        self.untoggle_optimizer(opt_g)
        logged["g"] = loss_g

        # Discriminator step on the detached prediction; it does not advance global_step (iterations count G steps).
        if self.discriminator is not None and clip is not None and prediction is not None:
            opt_d = optimizers[1]
            self.toggle_optimizer(opt_d)
            loss_d = losses.lsgan_discriminator_loss(
                self.discriminator(self.real_sample(clip)), self.discriminator(self.fake_sample(prediction).detach())
            )
            self.check_finite({"discriminator": loss_d})
            self.optimise(opt_d, loss_d, counts_as_step=False)
            self.untoggle_optimizer(opt_d)
            logged["d"] = loss_d
        self.log_step(logged, loss_g, batch_size=n)
