"""The FFP LightningModule: flow-loss gradient, skipped terms, optimiser steps and schedule, checkpoint content."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra_runs import TINY_FFP, hydra_job, tiny_dataset
from moving_blobs import BlobClips, moving_blobs
from torch.utils.data import DataLoader

from vad.app.build import build_datamodule, build_model
from vad.data.batches import clips_to_tensor
from vad.errors import ConfigError
from vad.flow import DISFlow, FlowNet2SD, LucasKanade
from vad.methods import losses
from vad.methods.ffp import FFP
from vad.methods.optimisation import NonFiniteLossError

TINY_G = {"features": 4, "depth": 2}
TINY_D = {"features": [4, 8, 8, 8]}


def tiny_ffp(estimator: torch.nn.Module | None = None, **loss: float) -> FFP:
    weights = {"intensity": 1.0, "gradient": 1.0, "flow": 0.0, "adversarial": 0.05} | loss
    return FFP(
        channels=1,
        clip_len=3,
        generator=TINY_G,
        discriminator=TINY_D,
        loss=weights,
        optim={"lr_g": 1e-3, "lr_d": 1e-4, "milestones": [2]},
        frozen={"flow": estimator},
    )


class CountCalls:
    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(self)

    def __call__(self, *args: object) -> None:
        self.calls += 1


@pytest.mark.parametrize("estimator", [LucasKanade, FlowNet2SD])
def test_flow_loss_gradient_reaches_the_prediction_not_the_flow_net(estimator: type) -> None:
    torch.manual_seed(0)
    flow = estimator()
    model = tiny_ffp(flow, intensity=0.0, gradient=0.0, adversarial=0.0, flow=1.0)
    clip = model.split_clip(moving_blobs(size=64))
    prediction = model.forward_clip(clip)
    prediction.frame.retain_grad()
    terms = model.all_generator_terms(prediction, clip)
    assert set(terms) == {"flow"}
    terms["flow"].backward()
    assert prediction.frame.grad is not None
    assert prediction.frame.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generator.parameters())
    assert all(p.grad is None for p in flow.parameters())


def test_flow_is_frozen_and_outside_the_module_tree() -> None:
    flow = FlowNet2SD()
    model = tiny_ffp(flow, flow=2.0)
    assert not any(k.startswith("_flow") or "flow" in k for k in model.state_dict())
    assert all(not p.requires_grad for p in flow.parameters())
    model.train()
    assert not flow.training
    model.to(torch.float64)
    assert next(flow.parameters()).dtype == torch.float64


def test_flow_weight_needs_an_estimator() -> None:
    with pytest.raises(
        ConfigError, match=r"model\.loss\.flow=2\.0 needs a flow estimator \(config group flow\): choose "
    ):
        tiny_ffp(None, flow=2.0)
    with pytest.raises(ConfigError, match=r"unknown term\(s\) \['flwo'\]; FFP's terms are \['intensity', 'gradient', "):
        tiny_ffp(None, flwo=1.0)


def test_a_flow_term_refuses_an_estimator_without_gradients() -> None:
    """The public ports' bug in another form: a flow term through DIS (no gradient) would train nothing."""
    with pytest.raises(
        ConfigError,
        match=r"model\.loss\.flow=2\.0 backpropagates through the flow estimator, but DISFlow \(flow\) is not "
        r"differentiable, so the term would give no gradient: choose flow=lk \(CPU, weight-free\) or flow=flownet2sd, "
        r"or set model\.loss\.flow=0",
    ):
        tiny_ffp(DISFlow(), flow=2.0)
    assert tiny_ffp(DISFlow(), flow=0.0).flow is not None  # held (e.g. for panels), no term through it


def fit(model: FFP, steps: int, tmp_path: Path, size: int = 32) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, DataLoader(BlobClips(8, size=size), batch_size=2))
    return trainer


def test_training_steps_flow_net_unchanged_and_iterations_counted(tmp_path: Path) -> None:
    flow = FlowNet2SD()
    before = copy.deepcopy(flow.state_dict())
    model = tiny_ffp(flow, flow=2.0)
    generator_before = copy.deepcopy(model.generator.state_dict())
    trainer = fit(model, steps=3, tmp_path=tmp_path, size=64)
    for key, value in flow.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in flow.parameters())
    assert any(not torch.equal(v, generator_before[k]) for k, v in model.generator.state_dict().items())
    # global_step counts iterations: the discriminator's step does not advance it.
    assert trainer.global_step == 3
    opt_g, opt_d = trainer.optimizers
    assert all(int(s["step"]) == 3 for s in opt_g.state.values())
    assert all(int(s["step"]) == 3 for s in opt_d.state.values())
    # milestones [2]: both learning rates divided by 10 after 2 iterations.
    assert opt_g.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(1e-5)
    logged = trainer.logged_metrics
    assert {"train/loss_intensity", "train/loss_gradient", "train/loss_flow", "train/loss_adversarial"} <= set(logged)
    assert {"train/loss_g", "train/loss_d"} <= set(logged)


def test_zero_weights_skip_their_computation(tmp_path: Path) -> None:
    flow = LucasKanade()
    counter = CountCalls(flow)
    model = tiny_ffp(flow, flow=0.0, adversarial=0.0)
    assert model.discriminator is None
    trainer = fit(model, steps=2, tmp_path=tmp_path)
    assert counter.calls == 0
    assert len(trainer.optimizers) == 1
    assert "train/loss_flow" not in trainer.logged_metrics
    assert "train/loss_adversarial" not in trainer.logged_metrics
    # with the weight on, the estimator runs twice per step (target flow and prediction flow)
    model = tiny_ffp(flow, flow=1.0, adversarial=0.0)
    fit(model, steps=2, tmp_path=tmp_path)
    assert counter.calls == 4


def test_discriminator_gradient_is_its_own_loss_only(tmp_path: Path) -> None:
    """D's gradient in its step is that of the D loss alone (ref bug: G's adversarial gradient leaked into D)."""
    torch.manual_seed(0)
    model = tiny_ffp(None, adversarial=1.0)
    start = copy.deepcopy(model)
    clip = start.split_clip(BlobClips(2).frames)  # the one batch fit() trains on (batch_size 2, no shuffling)
    d_loss = losses.lsgan_discriminator_loss(
        start.discriminator(clip.target), start.discriminator(start.generator(clip.stacked))
    )
    expected = torch.autograd.grad(d_loss, list(start.discriminator.parameters()))
    fit(model, steps=1, tmp_path=tmp_path)
    for p, g in zip(model.discriminator.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_non_finite_loss_names_the_term_and_step() -> None:
    model = tiny_ffp(None)
    with pytest.raises(NonFiniteLossError, match=r"loss term 'gradient' is nan at step 0"):
        model.weighted_sum({"intensity": torch.tensor(1.0), "gradient": torch.tensor(float("nan"))})


def test_test_signals_are_psnr_of_the_prediction() -> None:
    model = tiny_ffp(None).eval()
    frames = moving_blobs()
    with torch.no_grad():
        signals = model.frame_signals({"frames": frames})
        prediction = model.predict({"frames": frames})
    torch.testing.assert_close(signals["psnr"], losses.psnr(prediction, frames[:, -1]))
    torch.testing.assert_close(prediction, model.generator(frames[:, :-1].flatten(1, 2)))
    shown = model.sample_panels({"frames": frames})
    assert list(shown) == ["last input", "prediction", "target", "error"]
    assert [p.kind for p in shown.values()] == ["image", "image", "image", "heatmap"]
    torch.testing.assert_close(shown["last input"].data, frames[:, -2])
    with_flow = tiny_ffp(LucasKanade()).sample_panels({"frames": frames})
    assert [p.kind for p in with_flow.values()][-2:] == ["flow", "flow"]


def test_channels_last_changes_the_layout_not_the_numbers() -> None:
    torch.manual_seed(0)
    model = tiny_ffp(LucasKanade(), flow=1.0).eval()
    frames = moving_blobs()
    with torch.no_grad():
        reference = model.frame_signals({"frames": frames})["psnr"]
        model.setup("test")
        conv = next(m for m in model.generator.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(model.frame_signals({"frames": frames})["psnr"], reference, rtol=1e-4, atol=1e-4)


class StepRecorder(L.Callback):
    """What each training step saw (the batch's frames after the transfer hooks) and logged (its loss terms)."""

    def __init__(self) -> None:
        self.frames: list[torch.Tensor] = []
        self.losses: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.frames.append(batch["frames"].clone())
        self.losses.append({k: v.clone() for k, v in trainer.callback_metrics.items() if k.startswith("train/loss")})


def test_a_fit_on_the_loaders_uint8_batches_gives_exactly_the_losses_of_float_batches(tmp_path: Path) -> None:
    """The loader ships uint8 clips and the module converts them after the transfer (on_after_batch_transfer): a
    real Trainer fit gives bit for bit the losses and weights of a fit on the same clips converted on the host, as
    the loader shipped them before."""
    cfg = hydra_job("train", [*tiny_dataset(tmp_path / "tiny"), *TINY_FFP], tmp_path / "run", tmp_path)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    shipped = list(itertools.islice(datamodule.train_dataloader(), 3))
    assert all(batch["frames"].dtype == torch.uint8 for batch in shipped)
    floats = [{**batch, "frames": clips_to_tensor(list(batch["frames"].numpy()))} for batch in shipped]
    torch.manual_seed(0)
    model = build_model(cfg)
    twin = copy.deepcopy(model)
    runs = {}
    for name, module, batches in (("uint8", model, shipped), ("float", twin, floats)):
        recorder = StepRecorder()
        trainer = L.Trainer(
            max_steps=len(batches),
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            callbacks=[recorder],
            default_root_dir=tmp_path / name,
        )
        trainer.fit(module, DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch))
        assert trainer.global_step == len(batches)
        runs[name] = recorder
    for converted, host in zip(runs["uint8"].frames, runs["float"].frames, strict=True):
        assert converted.dtype == host.dtype == torch.float32  # every step saw float frames
        assert torch.equal(converted, host)
    assert len(runs["uint8"].losses) == len(shipped)
    for got, want in zip(runs["uint8"].losses, runs["float"].losses, strict=True):
        assert {"train/loss", "train/loss_g", "train/loss_d", "train/loss_intensity"} <= set(got)
        assert got.keys() == want.keys()
        for key in got:
            assert torch.equal(got[key], want[key]), key
    trained = twin.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained[key]), key
