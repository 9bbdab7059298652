"""AMC and the co-memory network: real Trainer runs through the configs, flow targets from the cache, training means
stored in the checkpoint, memories saved and restored, and the refusals."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra_runs import hydra_job, tiny_dataset
from tiny_runs import RESUMABLE, TINY_AMC, TINY_COMEMORY, assert_same_training_state

from vad.app.evaluate import evaluate
from vad.app.train import train
from vad.errors import ConfigError
from vad.flow import DISFlow
from vad.methods.amc import AMC
from vad.methods.amc_comemory import AMCCoMemory

RUN = [
    "trainer.max_steps=2",
    "debug=tiny",
    "dataset.batch_size=4",
]


def scores(run: Path) -> list[dict[str, str]]:
    with (run / "scores.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("method", [TINY_AMC, TINY_COMEMORY], ids=["amc", "amc_comemory"])
def test_trains_under_a_real_trainer_and_the_checkpoint_scores_the_same_in_evaluate(
    method: list[str], tmp_path: Path
) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    run = tmp_path / "run"
    metrics = train(hydra_job("train", [*data, *method, *RUN], run, tmp_path))
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["train_steps"] == 2
    assert saved["weights"] == {"patch_score": 1.0}
    assert 0.0 <= metrics["auc_micro"] <= 1.0
    header = (run / "scores.csv").read_text().splitlines()[0].split(",")
    assert header[4:] == ["psnr", "flow_error", "patch_flow_error", "patch_intensity_error", "patch_score"]
    # the training means: computed after training with the final weights, written into last.ckpt
    means = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["training_means"]
    assert torch.isfinite(means).all()
    assert (means > 0).all()
    assert means.tolist() == pytest.approx(
        [saved["training_means"][k] for k in ("patch_flow_error", "patch_intensity_error")]
    )
    # the score uses them: log(S_F / mean_F) + lam log(S_I / mean_I)
    lam = 0.2
    for row in scores(run):
        expected = np.log(float(row["patch_flow_error"]) / means[0].item()) + lam * np.log(
            float(row["patch_intensity_error"]) / means[1].item()
        )
        assert float(row["patch_score"]) == pytest.approx(expected, rel=1e-4, abs=1e-4)
    # vad.evaluate of the checkpoint: same signals, frame by frame (the means come from the checkpoint)
    again = tmp_path / "eval"
    for_eval = [o for o in [*data, *method] if not o.startswith("callbacks.")]  # the CLI adds the saved choices
    evaluate(hydra_job("eval", [*for_eval, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"], again, tmp_path))
    assert scores(again) == scores(run)


def test_comemory_memories_are_checkpointed_and_a_resumed_run_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    settings = [*data, *TINY_COMEMORY, *RESUMABLE, "trainer.max_steps=5", "trainer.log_every_n_steps=1"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train(hydra_job("train", settings, full, tmp_path))
    state = torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    fresh = AMCCoMemory(channels=1, clip_len=3, net={"features": 2, "appearance_items": 3, "motion_items": 4},
                        frozen={"flow_targets": DISFlow()})  # fmt: skip
    for branch, items in (("appearance", 3), ("motion", 4)):
        key = f"net.{branch}_memory.items"
        assert state[key].shape == (items, 16)
        assert not torch.equal(state[key], fresh.state_dict()[key])  # updated by training (the init is seeded)
    middle = full / "checkpoints" / "step0000003.ckpt"
    train(hydra_job("train", [*settings, f"ckpt_path={middle}"], resumed, tmp_path))
    assert_same_training_state(full / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")


def test_the_no_motion_memory_ablation_trains(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    run = tmp_path / "run"
    train(
        hydra_job("train", [*data, *TINY_COMEMORY, *RUN, "model.net.motion_memory=false", "test=false"], run, tmp_path)
    )
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert "net.appearance_memory.items" in state
    assert not any(k.startswith("net.motion_memory") for k in state)


def tiny_amc(**kwargs: object) -> AMC:
    args = {"channels": 1, "generator": {"features": 4, "depth": 2}, "discriminator": {"features": [4, 8, 8, 8]},
            "patch": {"window": 8}, "frozen": {"flow_targets": DISFlow()}}  # fmt: skip
    return AMC(**(args | kwargs))


def test_amc_losses_reach_both_decoders_and_d_sees_frame_and_flow() -> None:
    torch.manual_seed(0)
    model = tiny_amc()
    frames = torch.rand(2, 2, 1, 16, 16) * 2 - 1
    flows = torch.randn(2, 1, 2, 16, 16)
    clip = model.split_clip(frames, flows)
    prediction = model.forward_clip(clip)
    assert prediction.frame.shape == (2, 1, 16, 16)
    assert prediction.extras["flow"].shape == (2, 3, 16, 16)
    terms = model.generator_terms(prediction, clip)
    terms["flow"].backward()
    motion = model.generator.motion_head.weight.grad
    appearance = model.generator.appearance_head[0].weight.grad
    assert motion is not None
    assert motion.abs().sum() > 0
    assert appearance is None or appearance.abs().sum() == 0  # the flow term trains the motion path only
    model.zero_grad()
    model.generator_terms(model.forward_clip(clip), clip)["intensity"].backward()
    assert model.generator.appearance_head[0].weight.grad.abs().sum() > 0
    target = model.motion_target(clip)
    torch.testing.assert_close(target[:, 2], flows[:, 0].norm(dim=1))  # (dx, dy, magnitude)
    assert model.real_sample(clip).shape == (2, 4, 16, 16) == model.fake_sample(prediction).shape
    assert model.discriminator.in_channels == model.discriminator.layers[0].in_channels == 4


def test_refusals_name_the_key_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("model.clip_len must be 2 for AMC")):
        tiny_amc(clip_len=3)
    with pytest.raises(ConfigError, match="AMC needs flow targets: choose flow_targets=dis"):
        tiny_amc(frozen={})
    with pytest.raises(ConfigError, match=r"model.patch has unknown key\(s\) \['size'\]"):
        tiny_amc(patch={"size": 8})
    with pytest.raises(ConfigError, match=re.escape("model.motion_target='later' is not one of")):
        AMCCoMemory(channels=1, clip_len=3, motion_target="later", frozen={"flow_targets": DISFlow()})
    with pytest.raises(ConfigError, match=re.escape("model.clip_len must be >= 3")):
        AMCCoMemory(channels=1, clip_len=2, frozen={"flow_targets": DISFlow()})
    model = tiny_amc()
    batch = {"frames": torch.zeros(2, 2, 1, 16, 16), "flows": torch.zeros(2, 1, 2, 16, 16),
             "pseudo": torch.tensor([1, 0]), "pseudo_negative": torch.tensor([0.0, 0.0])}  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape("use dataset.pseudo.objective=negative with AMC")):
        model.training_clip(batch)
    with pytest.raises(RuntimeError, match="needs flow targets in its batches"):
        model.frame_signals({"frames": torch.zeros(2, 2, 1, 16, 16)})


def test_amc_trains_with_the_negative_pseudo_objective(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    run = tmp_path / "run"
    overrides = [*data, *TINY_AMC, *RUN, "pseudo=mixed", "dataset.pseudo.objective=negative",
                 "dataset.pseudo.probability=0.5", "test=false"]  # fmt: skip
    train(hydra_job("train", overrides, run, tmp_path))
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_a_missing_flownet2_checkpoint_for_the_targets_is_one_clear_error(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    missing = tmp_path / "nowhere" / "FlowNet2-SD.pth"
    overrides = [*data, *TINY_AMC, *RUN, "flow_targets=flownet2sd", f"flow_targets.checkpoint={missing}"]
    with pytest.raises(ConfigError, match=rf"{missing}: FlowNet2-SD checkpoint not found"):
        train(hydra_job("train", overrides, tmp_path / "run", tmp_path))
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, foreign)
    overrides[-1] = f"flow_targets.checkpoint={foreign}"
    with pytest.raises(ConfigError, match=rf"{foreign}: not a FlowNet2-SD checkpoint"):
        train(hydra_job("train", overrides, tmp_path / "run2", tmp_path))
