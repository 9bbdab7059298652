"""The weight average (``callbacks.ema`` -> vad.app.callbacks.WeightEMA): the exact average of the trained weights, the
average as the detector everywhere a checkpoint is read, training resumed to the weights of an uninterrupted run,
and the bad settings and resumes refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra_runs import TINY_FFP, hydra_job, tiny_dataset, tiny_synthetic
from tiny_runs import RESUMABLE, VAL, assert_same_training_state, logged

from vad.app.callbacks import WeightEMA
from vad.app.evaluate import _with_checkpoint_choices, evaluate
from vad.app.train import train
from vad.errors import ConfigError


def ema(decay: float) -> str:
    return f"callbacks.ema={{_target_: vad.app.callbacks.WeightEMA, decay: {decay}}}"


EVERY_STEP = [
    "callbacks.model_checkpoint.every_n_train_steps=1",
    "callbacks.model_checkpoint.save_top_k=-1",
    "model.loss.flow=0",
]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def averaged(tmp_path_factory: pytest.TempPathFactory, tiny_data: list[str]) -> Path:
    """4 iterations of the tiny FFP with an average of decay 0.5, a checkpoint after every one: the run."""
    home = tmp_path_factory.mktemp("ema")
    run = home / "run"
    train(hydra_job("train", [*tiny_data, *TINY_FFP, *EVERY_STEP, "trainer.max_steps=4", "test=false", ema(0.5)], run,
                    home))  # fmt: skip
    return run


def test_the_checkpoint_holds_the_exact_average_of_the_trained_weights(averaged: Path) -> None:
    run = averaged
    steps = [load(run / "checkpoints" / f"step{k:07d}.ckpt") for k in range(1, 5)]
    trained = [c[WeightEMA.KEY]["trained_state_dict"] for c in steps]
    assert [c[WeightEMA.KEY]["updates"] for c in steps] == [1, 2, 3, 4]
    # the first update copies the weights; then a <- d a + (1 - d) w with d = min(decay, (1 + n) / (10 + n))
    expected = {k: v.clone() for k, v in trained[0].items()}
    for k, v in steps[0]["state_dict"].items():
        assert torch.equal(v, trained[0][k]), k
    for n, weights in enumerate(trained[1:], start=1):
        keep = min(0.5, (1 + n) / (10 + n))
        expected = {k: keep * a + (1 - keep) * weights[k] if a.is_floating_point() else weights[k]
                    for k, a in expected.items()}  # fmt: skip
    last = load(run / "checkpoints" / "last.ckpt")
    generator = [k for k in expected if k.startswith("generator.") and expected[k].is_floating_point()]
    assert generator
    for key in expected:
        torch.testing.assert_close(last["state_dict"][key], expected[key], rtol=0, atol=1e-6)
    # the average is not the trained weights (which training goes on with, and which the checkpoint keeps)
    assert any(not torch.equal(last["state_dict"][k], trained[-1][k]) for k in generator)
    for key, value in trained[-1].items():
        assert torch.equal(last[WeightEMA.KEY]["trained_state_dict"][key], value), key


def evaluated(ckpt: Path, out: Path, home: Path) -> str:
    """vad.evaluate of ``ckpt`` in this process, as its command line composes it (the checkpoint's group choices
    first; its config rebuilds the run's model and data): its scores.csv."""
    evaluate(hydra_job("eval", _with_checkpoint_choices([f"ckpt_path={ckpt}"]), out, home))
    return (out / "scores.csv").read_text()


def test_the_average_is_what_the_run_tests_and_vad_evaluate_reads(tiny_data: list[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(hydra_job("train", [*tiny_data, *TINY_FFP, "model.loss.flow=0", "trainer.max_steps=4", ema(0.5)], run,
                    tmp_path))  # fmt: skip
    last = run / "checkpoints" / "last.ckpt"
    assert evaluated(last, tmp_path / "average", tmp_path) == (run / "scores.csv").read_text()

    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    checkpoint["state_dict"] = checkpoint[WeightEMA.KEY]["trained_state_dict"]
    torch.save(checkpoint, tmp_path / "trained.ckpt")
    assert evaluated(tmp_path / "trained.ckpt", tmp_path / "trained", tmp_path) != (run / "scores.csv").read_text()


def test_a_resumed_run_ends_with_the_weights_and_average_of_an_uninterrupted_one(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    settings = [*data, *TINY_FFP, *RESUMABLE, ema(0.9)]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train(hydra_job("train", settings, full, tmp_path))
    middle = full / "checkpoints" / "step0000003.ckpt"
    assert load(middle)[WeightEMA.KEY]["updates"] == 3  # the periodic save took its iteration's update
    train(hydra_job("train", [*settings, f"ckpt_path={middle}"], resumed, tmp_path))
    a, b = full / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt"
    assert_same_training_state(a, b)  # the averages (state_dict), optimiser states, schedulers
    first, second = load(a)[WeightEMA.KEY], load(b)[WeightEMA.KEY]
    assert first["updates"] == second["updates"] == 7
    for key, value in first["trained_state_dict"].items():
        assert torch.equal(value, second["trained_state_dict"][key]), key


def test_an_averaged_run_resumes_only_with_an_average(averaged: Path, tiny_data: list[str], tmp_path: Path) -> None:
    settings = [*tiny_data, *TINY_FFP, *EVERY_STEP, "test=false"]
    with pytest.raises(ConfigError, match=r"trained with a weight average.*callbacks\.ema.*decay: 0\.5") as error:
        train(hydra_job("train", [*settings, f"ckpt_path={averaged / 'checkpoints' / 'last.ckpt'}"], tmp_path / "r",
                        tmp_path))  # fmt: skip
    assert "\n" not in str(error.value)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_a_run_without_an_average_resumes_with_one_that_starts_at_the_resumed_weights(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    settings = [*data, *TINY_FFP, "model.loss.flow=0", "test=false"]
    train(hydra_job("train", settings, tmp_path / "plain", tmp_path))  # 3 iterations, no average
    plain = tmp_path / "plain" / "checkpoints" / "last.ckpt"
    assert WeightEMA.KEY not in load(plain)
    train(hydra_job("train", [*settings, "trainer.max_steps=5", ema(0.5), f"ckpt_path={plain}"], tmp_path / "r",
                    tmp_path))  # fmt: skip
    resumed = load(tmp_path / "r" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == 5
    assert resumed[WeightEMA.KEY]["updates"] == 2  # iterations 4 and 5


@pytest.mark.parametrize(("setting", "message"), [("decay: 1.0", "decay=1.0"), ("start_step: -1", "start_step=-1")])
def test_bad_settings_are_refused_naming_the_key(
    setting: str, message: str, tiny_data: list[str], tmp_path: Path
) -> None:
    data = tiny_data
    override = f"callbacks.ema={{_target_: vad.app.callbacks.WeightEMA, {setting}}}"
    with pytest.raises(ConfigError, match=rf"callbacks\.ema\.{message}"):
        train(hydra_job("train", [*data, *TINY_FFP, override], tmp_path / "run", tmp_path))


def test_validation_during_training_validates_the_average(tmp_path: Path) -> None:
    data = tiny_synthetic(tmp_path / "synthetic")
    run = tmp_path / "run"
    train(hydra_job("train", [*data, *TINY_FFP, *VAL, "model.loss.flow=0", "trainer.max_steps=6", "test=false",
                              ema(0.5)], run, tmp_path))  # fmt: skip
    aucs = logged(run, "val/auc_micro")
    assert len(aucs) == 4  # steps 2, 4 and 6 during training, then the final weights (the average) once more
    assert aucs[2] == aucs[3]  # at step 6 the validation in training saw the average too
    assert len(set(aucs[:3])) > 1
