"""Pseudo-anomalies by flow-loss inversion (Aalborg 2023 thesis), the design that works: two FFP branches and a
classifier.

A normal FFP branch (U-Net + PatchGAN, intensity / gradient / flow / adversarial losses) predicts frame t+1 as FFP
does. A pseudo-anomaly branch, a second U-Net with its own discriminator, is trained with the same appearance terms
but a NEGATIVE flow weight (``model.loss.inverted_flow``; the inversion factor is its size): it learns to predict
frames that look right and move wrong (motion blur, shake), near-distribution pseudo-anomalies. A classifier
(OGNet-style, :class:`vad.nets.classifier.FrameClassifier`) learns the pseudo-anomaly branch's outputs against the
normal branch's. Per test frame: ``psnr`` of the normal branch's prediction and ``abnormal_probability``, the
classifier's P(pseudo-anomaly) on that prediction; the score fuses them with ONE polarity (higher = more anomalous):
``{psnr: -1, abnormal_probability: 1}`` over per-video min-max normalised signals.

What the thesis code did wrong and this does not: its flows were detached, so the inverted term had no gradient (here
it reaches the pseudo branch through the differentiable frozen flow estimator; ``flow=dis`` is refused); the negative
loss was unbounded (here the pseudo branch's flow error enters as ``min(error, flow_bound)``: pushing it up is
rewarded only until the bound, and both are logged); the fused score added a normality score to an abnormality score
and evaluated with pos_label 0 (here one polarity, checked by a test); the labels were shifted by a frame (here the
shared clip protocol); the normal branch's discriminator was never stepped (here every discriminator steps every
iteration); the VGG19 perceptual loss indexed the batch instead of the layers (``vad.nets.vgg19``, optional:
``model.loss.perceptual`` with ``perceptual=vgg19 perceptual.weights=<torchvision VGG19 state dict>``).

Per iteration: normal G step (counts as the iteration), normal D step, pseudo G step, pseudo D step, classifier step
(the last four do not advance ``global_step``). Adam for the generators and discriminators, SGD for the classifier
(thesis settings: 2e-4 / 2e-5, classifier 1e-4).

    python -m vad.train model=pseudo_anomaly dataset=avenue
    python -m vad.train -m experiment=pseudo_anomaly_inversion_sweep      # inversion factor 0.5 .. 1.5
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

import torch
from torch import nn

from vad.errors import ConfigError
from vad.flow import FlowEstimator
from vad.methods import losses, panels
from vad.methods.base import Clip, FrozenNet, VADModule
from vad.methods.frame_predictor import FLOW_FOR_LOSS
from vad.methods.optimisation import multistep_schedulers
from vad.nets import PatchDiscriminator, UNet
from vad.nets.classifier import FrameClassifier
from vad.nets.vgg19 import VGG19Features, perceptual_loss

#: terms of both branches that compare the prediction with the target's appearance
APPEARANCE = ("intensity", "gradient", "perceptual")


class PseudoAnomaly(VADModule):
    """Normal FFP branch + inverted-flow pseudo-anomaly branch + frame classifier (manual optimisation).

    Args:
        channels: image channels (1 or 3).
        clip_len: t + 1 (t input frames, the last frame is the target).
        generator: keyword arguments of both branches' :class:`vad.nets.UNet`.
        discriminator: keyword arguments of both branches' :class:`vad.nets.PatchDiscriminator` (not built when the
            adversarial weight is 0).
        classifier: keyword arguments of :class:`vad.nets.classifier.FrameClassifier` (``features``).
        loss: weights of ``intensity``, ``gradient``, ``perceptual``, ``adversarial`` (both branches), ``flow`` (the
            normal branch), ``inverted_flow`` (the pseudo branch's flow term; must be <= 0) and ``classifier``.
        flow_bound: the pseudo branch's flow error is clamped at this value (pixels, mean absolute flow difference)
            before the negative weight: the inversion stops pushing once the error reaches it.
        optim: ``lr_g``, ``lr_d``, ``lr_c``, ``momentum_c``, ``betas``, ``milestones`` (iterations), ``gamma``.
        score: fusion weights of ``psnr`` and ``abnormal_probability``.
        frozen: ``{"flow": estimator, "perceptual": VGG19Features}`` as ``vad.app.build`` hands them over.
        common: the other arguments every method takes, see :class:`~vad.methods.base.VADModule`.
    """

    signals = ("psnr", "abnormal_probability")
    loss_terms = ("intensity", "gradient", "perceptual", "flow", "adversarial", "inverted_flow", "classifier")
    default_loss: ClassVar[Mapping[str, float]] = {
        "intensity": 1.0,
        "gradient": 1.0,
        "flow": 2.0,
        "adversarial": 0.05,
        "inverted_flow": -2.0,
        "classifier": 1.0,
    }
    default_score: ClassVar[Mapping[str, float]] = {"psnr": -1.0, "abnormal_probability": 1.0}
    default_optim: ClassVar[Mapping[str, Any]] = {
        "lr_g": 2e-4,
        "lr_d": 2e-5,
        "lr_c": 1e-4,
        "momentum_c": 0.9,
        "betas": (0.5, 0.999),
        "milestones": (),
        "gamma": 0.1,
    }
    frozen_nets: ClassVar[Mapping[str, FrozenNet]] = {
        "flow": replace(FLOW_FOR_LOSS, terms=("flow", "inverted_flow")),
        "perceptual": FrozenNet(
            group="perceptual",
            what="VGG19 feature extractor",
            terms=("perceptual",),
            gradient=True,
            kind=VGG19Features,
            choices="perceptual=vgg19 perceptual.weights=<torchvision VGG19 state dict>",
        ),
    }
    default_channels_last = True

    def __init__(
        self,
        *,
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
        classifier: Mapping[str, Any] | None = None,
        flow_bound: float = 2.0,
        optim: Mapping[str, Any] | None = None,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        if self.weight("inverted_flow") > 0:
            raise ConfigError(
                f"model.loss.inverted_flow={self.weight('inverted_flow')} must be <= 0: it is the negative weight of "
                "the pseudo-anomaly branch's flow term (its size is the inversion factor)"
            )
        if not flow_bound > 0:
            raise ConfigError(f"model.flow_bound must be > 0 (pixels of mean flow error), got {flow_bound}")
        if not self.weight("classifier"):
            raise ConfigError(
                "model.loss.classifier must not be 0: the classifier gives the abnormal_probability signal"
            )
        unknown = sorted(set(optim or {}) - set(self.default_optim))
        if unknown:
            raise ConfigError(f"model.optim has unknown key(s) {unknown}; valid: {list(self.default_optim)}")
        self.optim = dict(self.default_optim) | dict(optim or {})
        self.flow_bound = float(flow_bound)
        channels = self.channels
        inputs = (self.clip_len - 1) * channels
        self.generator = UNet(inputs, channels, **dict(generator or {}))
        self.pseudo_generator = UNet(inputs, channels, **dict(generator or {}))
        adversarial = self.weight("adversarial") != 0
        self.discriminator = PatchDiscriminator(channels, **dict(discriminator or {})) if adversarial else None
        self.pseudo_discriminator = PatchDiscriminator(channels, **dict(discriminator or {})) if adversarial else None
        self.classifier = FrameClassifier(channels, **dict(classifier or {}))
        self.save_hyperparameters(ignore=["frozen"])

    # ------------------------------------------------------------------ optimisers
    def configure_optimizers(self) -> Any:
        o = self.optim
        betas = tuple(o["betas"])

        def adam(net: nn.Module, lr: float) -> torch.optim.Optimizer:
            return torch.optim.Adam(net.parameters(), lr=lr, betas=betas)

        named = [("generator", adam(self.generator, o["lr_g"]))]
        if self.discriminator is not None:
            named.append(("discriminator", adam(self.discriminator, o["lr_d"])))
        named.append(("pseudo-generator", adam(self.pseudo_generator, o["lr_g"])))
        if self.pseudo_discriminator is not None:
            named.append(("pseudo-discriminator", adam(self.pseudo_discriminator, o["lr_d"])))
        classifier = torch.optim.SGD(self.classifier.parameters(), lr=o["lr_c"], momentum=o["momentum_c"])
        named.append(("classifier", classifier))
        return [opt for _, opt in named], multistep_schedulers(named, o["milestones"] or [], o["gamma"])

    def _optimizers(self) -> dict[str, Any]:
        """The optimisers by net, in :meth:`configure_optimizers`' order."""
        opts = list(self.optimizers())
        names = ["generator"]
        names += ["discriminator"] if self.discriminator is not None else []
        names += ["pseudo_generator"]
        names += ["pseudo_discriminator"] if self.pseudo_discriminator is not None else []
        names += ["classifier"]
        return dict(zip(names, opts, strict=True))

    # ------------------------------------------------------------------ terms
    @property
    def flow(self) -> FlowEstimator | None:
        return self.frozen_net("flow")

    def appearance_terms(self, frame: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if self.weight("intensity"):
            terms["intensity"] = losses.intensity_loss(frame, target)
        if self.weight("gradient"):
            terms["gradient"] = losses.gradient_loss(frame, target)
        if self.weight("perceptual"):
            terms["perceptual"] = perceptual_loss(self.frozen_net("perceptual"), frame, target)
        return terms

    def flow_error(self, clip: Clip, frame: torch.Tensor, target_flow: torch.Tensor) -> torch.Tensor:
        """FFP's flow term: mean |F(last, prediction) - F(last, target)|, with the gradient through the estimator."""
        return losses.flow_loss(self.flow(clip.last, frame), target_flow)

    def inverted_flow_term(self, flow_error: torch.Tensor) -> torch.Tensor:
        """The pseudo branch's bounded flow term, min(error, flow_bound); its weight is negative."""
        return torch.clamp(flow_error, max=self.flow_bound)

    def _adversarial(self, discriminator: nn.Module | None, frame: torch.Tensor) -> dict[str, torch.Tensor]:
        if discriminator is None:
            return {}
        return {"adversarial": losses.lsgan_generator_loss(discriminator(frame))}

    def _d_step(self, optimizer: Any, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        self.toggle_optimizer(optimizer)
        loss = losses.lsgan_discriminator_loss(discriminator(real), discriminator(fake.detach()))
        self.check_finite({"discriminator": loss})
        self.optimise(optimizer, loss, counts_as_step=False)
        self.untoggle_optimizer(optimizer)
        return loss

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        opts = self._optimizers()
        # Items of a pseudo-anomaly plug-in with the negative objective give the normal branch only the bounded
        # negative term (vad.data.pseudo.plugins); the branches and the classifier train on the others.
        usual, negative = self.split_pseudo(batch)
        logged: dict[str, torch.Tensor] = {}
        # The negative items go through the normal branch before the usual ones: a batch-normalised generator's
        # running statistics depend on that order.
        negative_output = None if negative is None else self.predict_clip(self.training_clip(negative))
        if usual is None:
            self.toggle_optimizer(opts["generator"])
            loss_g = self.objective_step(opts["generator"], {}, negative, lambda _: negative_output, logged)
            self.untoggle_optimizer(opts["generator"])
            self.log_step(logged, loss_g, batch_size=batch["frames"].shape[0])
            return
        clip = self.training_clip(usual)
        n = clip.target.shape[0]
        inputs = clip.stacked
        target_flow = None
        if self.weight("flow") or self.weight("inverted_flow"):
            with torch.no_grad():
                target_flow = self.flow(clip.last, clip.target)

        # 1. the normal branch: FFP (this step is the iteration)
        self.toggle_optimizer(opts["generator"])
        normal = self.generator(inputs)
        terms = self.appearance_terms(normal, clip.target)
        if self.weight("flow"):
            terms["flow"] = self.flow_error(clip, normal, target_flow)
        terms |= self._adversarial(self.discriminator, normal)
        loss_g = self.objective_step(opts["generator"], terms, negative, lambda _: negative_output, logged)
        self.untoggle_optimizer(opts["generator"])
        logged["g"] = loss_g
        if self.discriminator is not None:
            logged["d"] = self._d_step(opts["discriminator"], self.discriminator, clip.target, normal)

        # 2. the pseudo-anomaly branch: the same appearance terms, the flow term inverted and bounded
        self.toggle_optimizer(opts["pseudo_generator"])
        pseudo = self.pseudo_generator(inputs)
        pseudo_terms = self.appearance_terms(pseudo, clip.target)
        if self.weight("inverted_flow"):
            error = self.flow_error(clip, pseudo, target_flow)
            pseudo_terms["inverted_flow"] = self.inverted_flow_term(error)
            self.log("train/pseudo_flow_error", error.detach(), batch_size=n, on_step=True, on_epoch=False)
            self.log("train/pseudo_flow_bound", self.flow_bound, batch_size=n, on_step=True, on_epoch=False)
        pseudo_terms |= self._adversarial(self.pseudo_discriminator, pseudo)
        loss_p = self.weighted_sum(pseudo_terms)
        self.optimise(opts["pseudo_generator"], loss_p, counts_as_step=False)
        self.untoggle_optimizer(opts["pseudo_generator"])
        pseudo_logged = dict(pseudo_terms) | {"g": loss_p}
        if self.pseudo_discriminator is not None:
            pseudo_logged["d"] = self._d_step(
                opts["pseudo_discriminator"], self.pseudo_discriminator, clip.target, pseudo
            )

        # 3. the classifier: pseudo-anomaly branch outputs (class 1) against normal branch outputs (class 0)
        self.toggle_optimizer(opts["classifier"])
        frames = torch.cat([normal.detach(), pseudo.detach()])
        labels = torch.cat([torch.zeros(n), torch.ones(n)]).long().to(frames.device)
        logits = self.classifier(frames)
        loss_c = nn.functional.cross_entropy(logits.float(), labels)
        self.check_finite({"classifier": loss_c})
        self.optimise(opts["classifier"], self.weight("classifier") * loss_c, counts_as_step=False)
        self.untoggle_optimizer(opts["classifier"])
        logged["classifier"] = loss_c
        accuracy = (logits.argmax(1) == labels).float().mean()

        self.log_step(logged, loss_g, batch_size=n)
        self.log_terms(pseudo_logged, prefix="train/pseudo_loss_", batch_size=n)
        self.log("train/classifier_accuracy", accuracy, batch_size=n, on_step=True, on_epoch=False)

    # ------------------------------------------------------------------ signals
    def predict_clip(self, clip: Clip) -> torch.Tensor:
        """The normal branch's prediction of a clip's target."""
        return self.generator(clip.stacked)

    def predict(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.predict_clip(self.split_clip(batch["frames"]))

    def frame_signals(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``psnr`` of the normal branch's prediction; ``abnormal_probability``: the classifier's P(pseudo-anomaly)
        of that prediction."""
        clip = self.split_clip(batch["frames"])
        prediction = self.generator(clip.stacked)
        probability = self.classifier.abnormal_probability(prediction)
        return {"psnr": losses.psnr(prediction.float(), clip.target.float()), "abnormal_probability": probability}

    def sample_panels(self, batch: Mapping[str, Any]) -> dict[str, panels.Panel]:
        """Last input, normal prediction, target, its error map, then the pseudo-anomaly branch's prediction and
        error map."""
        shown = super().sample_panels(batch)
        clip = self.split_clip(batch["frames"])
        pseudo = self.pseudo_generator(clip.stacked)
        shown["pseudo-anomaly branch"] = panels.image(pseudo)
        shown["pseudo-anomaly error"] = panels.error_map(pseudo, clip.target)
        return shown
