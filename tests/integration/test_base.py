"""The method kit of the shared base: declarations checked once, frozen helper nets, clip cutting, step counting,
sample panels. Every method gets these from ``vad.methods.base``; a method file only declares and computes."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import pytest
import torch
from hydra_runs import TINY_FFP, hydra_job, tiny_dataset
from matplotlib.image import imread
from moving_blobs import BlobClips, moving_blobs
from omegaconf import OmegaConf, open_dict
from torch import nn
from torch.utils.data import DataLoader

from vad.app.build import build_datamodule, build_model
from vad.app.callbacks import SampleGrids
from vad.data.batches import clips_to_tensor, frames_to_float
from vad.errors import ConfigError
from vad.flow import LucasKanade
from vad.methods import losses, panels
from vad.methods.base import Clip, FrozenNet, VADModule
from vad.methods.copy_last import CopyLast
from vad.methods.ffp import FFP
from vad.methods.frame_predictor import FramePredictor, Prediction
from vad.methods.mnad import MNAD
from vad.methods.optimisation import LIGHTNING_TESTED, _uncounted
from vad.reporting.panels import colour_wheel, flow_to_rgb, render


class Features(nn.Module):
    """A stand-in feature extractor with weights (a perceptual loss's VGG, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class TwoNets(FramePredictor):
    """A predictor declaring two frozen nets: a flow estimator its loss backpropagates through and a feature
    extractor for a perceptual term; shows that any number of named nets come through one mechanism."""

    signals = ("psnr",)
    loss_terms = ("intensity", "flow", "perceptual", "adversarial")
    default_loss: ClassVar[Mapping[str, float]] = {"intensity": 1.0, "flow": 0.0, "perceptual": 0.0}
    frozen_nets: ClassVar[Mapping[str, FrozenNet]] = {
        "flow": FrozenNet(group="flow", what="flow estimator", terms=("flow",), gradient=True, choices="flow=lk"),
        "features": FrozenNet(group="features", what="feature extractor", terms=("perceptual",), gradient=True),
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["frozen"])

    def build_generator(self, config: dict[str, Any]) -> nn.Module:
        return nn.Conv2d(self.input_frames * self.channels, self.channels, 3, padding=1)

    def forward_clip(self, clip: Clip) -> Prediction:
        return Prediction(torch.tanh(self.generator(clip.stacked)))

    def generator_terms(self, prediction: Prediction, clip: Clip) -> dict[str, torch.Tensor]:
        terms = {"intensity": losses.intensity_loss(prediction.frame, clip.target)}
        if self.weight("perceptual"):
            features = self.frozen_net("features")
            terms["perceptual"] = (features(prediction.frame) - features(clip.target)).abs().mean()
        return terms


def two_nets(**loss: float) -> TwoNets:
    return TwoNets(
        channels=1,
        clip_len=3,
        loss={"intensity": 1.0} | loss,
        frozen={"flow": LucasKanade(), "features": Features()},
    )


# ---------------------------------------------------------------------------------------------- declarations
@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        (FFP, {"loss": {"intensity": 1, "gradeint": 1}}, r"model\.loss has unknown term\(s\) \['gradeint'\]; FFP's "
         r"terms are \['intensity', 'gradient', 'flow', 'adversarial'\]"),
        (MNAD, {"loss": {"intensity": 1, "compact": 1}}, r"unknown term\(s\) \['compact'\]; MNAD's terms are "
         r"\['intensity', 'compactness', 'separateness'\]"),
        (FFP, {"loss": {"intensity": float("nan")}}, r"model\.loss\.intensity=nan is not a finite number"),
        (FFP, {"loss": {"intensity": "high"}}, r"model\.loss\.intensity='high' is not a finite number"),
        (FFP, {"clip_len": 1}, r"model\.clip_len must be >= 2 for frame prediction \(t inputs \+ 1 target\), got 1"),
        (MNAD, {"clip_len": 5, "task": "reconstruction"}, r"model\.clip_len must be 1 for reconstruction"),
        (MNAD, {"task": "recon"}, r"model\.task='recon' is not one of \['prediction', 'reconstruction'\]"),
        (FFP, {"optim": {"lr": 1e-4}, "loss": {"intensity": 1}}, r"model\.optim has unknown key\(s\) \['lr'\]; "
         r"valid: \['lr_g', 'lr_d', "),
        (FFP, {"frozen": {"features": Features()}}, r"FFP takes no frozen net\(s\) \['features'\]; it takes "
         r"\['flow'\]"),
        (FFP, {"frozen": {"flow": Features()}, "loss": {"flow": 1.0}}, r"flow: builds a Features, not a FlowEstimator"),
    ],
)  # fmt: skip
def test_declarations_are_checked_once_in_the_base(method: type, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        method(channels=1, **kwargs)


def test_split_clip_cuts_prediction_and_reconstruction_clips() -> None:
    frames = torch.randn(2, 5, 3, 8, 8)
    clip = FFP(channels=3, clip_len=5, loss={"intensity": 1.0}).split_clip(frames)
    assert clip.inputs.shape == (2, 4, 3, 8, 8)
    assert torch.equal(clip.stacked, frames[:, :4].reshape(2, 12, 8, 8))
    assert torch.equal(clip.last, frames[:, 3])
    assert torch.equal(clip.target, frames[:, 4])
    one = frames[:, -1:]
    clip = MNAD(channels=3, clip_len=1, task="reconstruction").split_clip(one)
    assert torch.equal(clip.stacked, one[:, 0])
    assert torch.equal(clip.target, one[:, 0])
    assert torch.equal(clip.last, one[:, 0])


# ------------------------------------------------------------------------------ batches: uint8 in, float in the steps
def test_prepare_batch_moves_the_batch_and_converts_only_its_frame_entries() -> None:
    model = CopyLast(channels=1, clip_len=2)
    frames = torch.randint(0, 256, (3, 2, 1, 4, 4), dtype=torch.uint8)
    batch = {
        "frames": frames,
        "target": frames[:, -1].clone(),
        "video": ["a", "b", "c"],
        "index": torch.arange(3),
        "pseudo_bound": torch.full((3,), 0.5, dtype=torch.float64),
    }
    out = model.prepare_batch(batch)
    assert out["frames"].dtype == out["target"].dtype == torch.float32
    assert torch.equal(out["frames"], frames_to_float(frames))
    assert torch.equal(out["target"], frames_to_float(frames[:, -1]))
    assert out["index"].dtype == torch.int64
    assert out["pseudo_bound"].dtype == torch.float64
    assert out["video"] == ["a", "b", "c"]
    assert batch["frames"] is frames  # the caller's batch is left as it was
    again = model.prepare_batch(out)
    assert again["frames"] is out["frames"]  # float frames pass unchanged


class FramesSeen(VADModule):
    """Records the frames its validation steps see."""

    signals = ("psnr",)
    trainable = False

    def __init__(self) -> None:
        super().__init__(channels=1, clip_len=2)
        self.seen: list[torch.Tensor] = []

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self.seen.append(batch["frames"])


@pytest.mark.parametrize(("precision", "dtype"), [("32-true", torch.float32), ("bf16-true", torch.bfloat16)])
def test_the_steps_see_float_frames_in_the_trainers_precision(precision: str, dtype: torch.dtype) -> None:
    """Lightning converts a batch's float tensors to a true precision before the transfer, when the frames are still
    uint8; after the conversion on the device they get the same one."""
    frames = torch.randint(0, 256, (2, 2, 1, 4, 4), dtype=torch.uint8)
    model = FramesSeen()
    trainer = L.Trainer(accelerator="cpu", precision=precision, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.validate(model, DataLoader([{"frames": frames}], batch_size=None, collate_fn=lambda b: b), verbose=False)
    (seen,) = model.seen
    assert seen.dtype == dtype
    assert torch.equal(seen, frames_to_float(frames).to(dtype))


def test_the_loops_outside_the_trainer_convert_the_loaders_batches(tmp_path: Path) -> None:
    cfg = hydra_job("train", [*tiny_dataset(tmp_path / "tiny"), "model=copy_last"], tmp_path / "run", tmp_path)
    model = build_model(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    loader = datamodule.training_frames_dataloader()
    assert all(batch["frames"].dtype == torch.uint8 for batch in loader)
    host = [{**batch, "frames": clips_to_tensor(list(batch["frames"].numpy()))} for batch in loader]
    got, want = model.collect_signals(loader), model.collect_signals(host)
    assert len(got["psnr"]) == len(loader.dataset)
    assert np.isfinite(got["psnr"]).all()
    np.testing.assert_array_equal(got["psnr"], want["psnr"])


# ---------------------------------------------------------------------------------------------- frozen nets
def test_frozen_nets_stay_outside_the_module_tree_and_follow_to() -> None:
    model = two_nets(flow=1.0, perceptual=1.0)
    features, flow = model.frozen_net("features"), model.frozen_net("flow")
    assert features is not None
    assert flow is not None
    # not submodules: no checkpoint entry, no DDP parameter, no optimiser parameter
    assert all(not key.startswith(("features", "flow", "_frozen")) for key in model.state_dict())
    assert not any(m is features or m is flow for m in model.modules())
    assert not any(p is features.conv.weight for p in model.parameters())
    assert not features.conv.weight.requires_grad
    model.train()
    assert not features.training
    model.to(torch.float64)
    assert features.conv.weight.dtype == torch.float64
    with pytest.raises(KeyError, match=r"declares no frozen net 'vgg'; it has \['flow', 'features'\]"):
        model.frozen_net("vgg")


def test_a_term_through_a_frozen_net_trains_the_generator_not_the_net(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = two_nets(perceptual=1.0)
    features = model.frozen_net("features")
    before = copy.deepcopy(features.state_dict())
    generator_before = copy.deepcopy(model.generator.state_dict())
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, DataLoader(BlobClips(4), batch_size=2))
    assert "perceptual" in {k.removeprefix("train/loss_") for k in trainer.logged_metrics}
    for key, value in features.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in features.parameters())
    assert any(not torch.equal(v, generator_before[k]) for k, v in model.generator.state_dict().items())
    checkpoint = tmp_path / "model.ckpt"
    trainer.save_checkpoint(checkpoint)
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert set(saved) == {"generator.weight", "generator.bias"}


def test_build_hands_every_declared_net_over_by_name_from_its_config_group(tmp_path: Path) -> None:
    cfg = hydra_job("train", ["flow=lk"], tmp_path / "run", tmp_path)
    cfg.model = OmegaConf.create(
        {"_target_": "test_base.TwoNets", "channels": 1, "clip_len": 3, "loss": {"intensity": 1.0, "perceptual": 1.0}}
    )
    with open_dict(cfg):  # a config group of its own, as `- features: vgg19` in a defaults list would add
        cfg.features = OmegaConf.create({"_target_": "test_base.Features"})
    model = build_model(cfg)
    assert isinstance(model.frozen_net("flow"), LucasKanade)
    assert isinstance(model.frozen_net("features"), Features)
    cfg.features = OmegaConf.create({"_target_": "vad.flow.no_flow"})  # a `none` choice: no net
    with pytest.raises(ConfigError, match=r"model\.loss\.perceptual=1\.0 needs a feature extractor \(config group "
                       r"features\): set model\.loss\.perceptual=0"):  # fmt: skip
        build_model(cfg)


# ---------------------------------------------------------------------------------------------- step counting
def test_discriminator_steps_do_not_advance_global_step(tmp_path: Path) -> None:
    """global_step counts iterations (G steps) so max_steps and lr milestones mean the same with or without D.

    vad keeps D steps uncounted by swapping private hooks of Lightning's manual optimisation loop; if a Lightning
    release changes them, this test fails and names the tested range to pin.
    """
    model = FFP(channels=1, clip_len=3, generator={"features": 4, "depth": 2},
                discriminator={"features": [4, 8, 8, 8]}, loss={"intensity": 1.0, "adversarial": 0.05})  # fmt: skip
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, DataLoader(BlobClips(8), batch_size=2))
    opt_g, opt_d = trainer.optimizers
    d_steps = {int(s["step"]) for s in opt_d.state.values()}
    broken = (
        f"lightning {L.__version__}: {trainer.global_step} global steps and {d_steps} discriminator steps after 3 "
        f"iterations; vad's uncounted D step no longer works with this release (tested: lightning{LIGHTNING_TESTED})"
    )
    assert trainer.global_step == 3, broken
    assert d_steps == {3}, broken
    assert {int(s["step"]) for s in opt_g.state.values()} == {3}, broken


def test_uncounted_refuses_an_optimizer_without_the_hooks_it_swaps() -> None:
    with pytest.raises(RuntimeError, match=r"no _on_before_step/_on_after_step hooks.*install lightning>=2\.5"):  # noqa: SIM117
        with _uncounted(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)):  # type: ignore[arg-type]
            pass


# ---------------------------------------------------------------------------------------------- sample panels
def test_flow_colour_wheel_directions() -> None:
    uv = np.zeros((2, 1, 5))
    uv[0, 0] = [1, 0, -1, 0, 0]
    uv[1, 0] = [0, 1, 0, -1, 0]
    rgb = flow_to_rgb(uv)[0]
    np.testing.assert_allclose(rgb[0], [1, 0, 0])  # right: red
    np.testing.assert_allclose(rgb[1], [1, 0.9, 0])  # down: yellow
    np.testing.assert_allclose(rgb[2], [0, 0.82, 1], atol=0.01)  # left: cyan-blue
    np.testing.assert_allclose(rgb[3], [0.35, 0, 1], atol=0.01)  # up: blue-violet
    np.testing.assert_allclose(rgb[4], [1, 1, 1])  # no motion: white
    half = flow_to_rgb(uv * 0.5, max_radius=1.0)[0]
    np.testing.assert_allclose(half[0], [1, 0.5, 0.5])  # half the radius: half saturated
    assert colour_wheel().shape == (55, 3)


def test_render_titles_rows_with_video_and_frame_and_renders_each_kind() -> None:
    shown = {
        "frame": panels.image(torch.zeros(3, 1, 4, 6)),
        "motion": panels.flow(torch.ones(3, 2, 4, 6)),
        "error": panels.heatmap(torch.rand(3, 4, 6)),
    }
    grid = render(shown, ["01", "01", "02"], torch.tensor([4, 5, 0]), count=2)
    assert grid.titles == ["01 · frame 4", "01 · frame 5"]
    assert grid.heatmaps == ("error",)
    assert grid.rows[0]["frame"].shape == (4, 6)
    assert grid.rows[0]["motion"].shape == (4, 6, 3)
    assert grid.rows[0]["error"].shape == (4, 6)
    with pytest.raises(ValueError, match=r"a flow panel must be \(N, 2, H, W\), got \(3, 1, 4, 6\)"):
        panels.flow(torch.zeros(3, 1, 4, 6))


class FourPanels(TwoNets):
    def sample_panels(self, batch: Mapping[str, Any]) -> dict[str, panels.Panel]:
        shown = super().sample_panels(batch)
        clip = self.split_clip(batch["frames"])
        shown["flow"] = panels.flow(self.frozen_net("flow")(clip.last, clip.target))
        return shown


def test_sample_grids_show_whatever_panels_the_method_returns(tmp_path: Path) -> None:
    model = FourPanels(channels=1, clip_len=3, frozen={"flow": LucasKanade()})
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[SampleGrids(every_n_steps=2, rows=3)])  # fmt: skip
    trainer.fit(model, DataLoader(BlobClips(6, size=64), batch_size=3))
    grid = imread(tmp_path / "samples" / "step0000002.png")
    assert 1.4 < grid.shape[1] / grid.shape[0] < 2.2  # five panels wide, three rows high
    batch = {"frames": moving_blobs(2, 3, 64), "video": ["01", "01"], "index": torch.tensor([2, 3])}
    assert list(model.sample_panels(batch)) == ["last input", "prediction", "target", "error", "flow"]


def test_test_samples_carry_the_video_and_frame_of_each_row(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    cfg = hydra_job("train", [*data, *TINY_FFP, "flow=lk", "model.loss.flow=1"], tmp_path / "run", tmp_path)
    model = build_model(cfg)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.test(model, datamodule=build_datamodule(cfg), verbose=False)
    grid = render(*model.test_samples)
    assert grid.titles == ["01 · frame 4", "01 · frame 5", "01 · frame 6", "01 · frame 7"]
    assert list(grid.rows[0]) == [
        "last input", "prediction", "target", "error", "flow (last → target)", "flow (last → prediction)"
    ]  # fmt: skip
    assert grid.heatmaps == ("error",)
    assert grid.rows[0]["flow (last → target)"].shape == (32, 32, 3)
