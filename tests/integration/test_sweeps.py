"""Multiruns in-process through the real CLI entry point: a basic sweep (one run folder and one wandb run per job,
one group, a summary), a failing job that does not stop the sweep, and an Optuna study that resumes."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class
from hydra_runs import TINY_FFP, tiny_dataset, tiny_synthetic
from wandb_records import offline_runs

from vad import config_dir
from vad.app import train as train_module
from vad.app.runs import load_sweep

FAST = ["model.loss.flow=0", "trainer.max_steps=2"]  # the flow estimator is not what these tests are about


def multirun(monkeypatch: pytest.MonkeyPatch, home: Path, args: list[str]) -> None:
    """``python -m vad.train -m <args>`` in this process, with everything written under ``home``."""
    monkeypatch.setattr(sys, "argv", ["vad.train", "-m", f"paths.root_dir={home}", *args])
    train_module.main()


def summary(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "sweep_summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_basic_sweep_runs_each_job_in_its_folder_and_wandb_run_and_summarises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    sweep = tmp_path / "sweep"
    multirun(
        monkeypatch,
        tmp_path,
        [*data, *TINY_FFP, *FAST, "logger=many", "model.loss.adversarial=0,0.05", f"hydra.sweep.dir={sweep}"],
    )
    rows = summary(sweep)
    assert [(r["job"], r["model.loss.adversarial"], r["status"]) for r in rows] == [
        ("0", "0", "completed"),
        ("1", "0.05", "completed"),
    ]
    for job, row in zip(("0", "1"), rows, strict=True):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert float(row["auc_micro"]) == pytest.approx(metrics["auc_micro"])
        assert metrics["wandb"]["group"] == "sweep"
    assert "| job | model.loss.adversarial | status    |" in (sweep / "sweep_summary.md").read_text()

    (first,) = offline_runs(sweep / "0" / "wandb")
    (second,) = offline_runs(sweep / "1" / "wandb")
    assert first.id != second.id
    assert first.group == second.group == "sweep"
    assert first.name.startswith("0:")  # <job number>:<the job's overrides>
    assert second.name.startswith("1:")
    assert "model.loss.adversarial=0," in first.name
    assert "model.loss.adversarial=0.05," in second.name
    assert first.exit_code == second.exit_code == 0
    assert "train/loss_adversarial" not in first.keys  # weight 0: the term is skipped, not logged as 0
    assert "train/loss_adversarial" in second.keys


def test_a_failing_job_is_recorded_and_the_sweep_goes_on_then_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    sweep = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit_info:
        multirun(
            monkeypatch, tmp_path, [*data, *TINY_FFP, *FAST, "model.optim.lr_g=1e30,1e-4", f"hydra.sweep.dir={sweep}"]
        )
    assert exit_info.value.code == 1
    assert f"error: 1 of 2 jobs did not complete (0); see {sweep / 'sweep_summary.md'}" in capsys.readouterr().err
    failed, completed = load_sweep(sweep)
    assert (failed.status, completed.status) == ("failed", "completed")
    assert failed.error.startswith("loss term 'intensity' is ")
    assert (sweep / "0" / "checkpoints" / "nonfinite_step0000001.ckpt").is_file()
    assert [r["status"] for r in summary(sweep)] == ["failed", "completed"]


def test_optuna_sweep_writes_its_study_and_resumes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 training videos of 36 frames: one is held out and turned into the pseudo-anomaly validation video
    data = [*tiny_synthetic(tmp_path / "synthetic"), "dataset.val_videos=1"]
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = [*data, *TINY_FFP, *FAST, "hparams_search=ffp_optuna", f"hydra.sweeper.storage={storage}"]
    multirun(monkeypatch, tmp_path, [*search, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path / 'a'}"])

    study = optuna.load_study(study_name="ffp-synthetic", storage=storage)
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert set(trials[0].params) == {
        "model.loss.gradient",
        "model.loss.adversarial",
        "model.optim.lr_g",
        "model.optim.lr_d",
    }
    for trial in trials:  # the objective is the validation AUC of the tested (best-validation) checkpoint
        metrics = json.loads((Path(trial.user_attrs["job_dir"]) / "metrics.json").read_text())
        assert trial.value == pytest.approx(metrics["val_auc_micro"])
        assert metrics["checkpoint_selection"].startswith("best_val")
        assert not metrics["selected_on_test_labels"]
    text = (tmp_path / "a" / "optuna_study.md").read_text()
    assert f"Best: trial {study.best_trial.number}, val_auc_micro = {study.best_value:.4f}" in text
    assert "TEST LABELS" not in text
    assert "TEST LABELS" not in (tmp_path / "a" / "sweep_summary.md").read_text()
    assert [r["status"] for r in summary(tmp_path / "a")] == ["completed", "completed"]
    assert all(r["val_auc_micro"] for r in summary(tmp_path / "a"))

    # the same command with more trials continues the study: only the missing trial runs
    multirun(monkeypatch, tmp_path, [*search, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={tmp_path / 'b'}"])
    assert len(optuna.load_study(study_name="ffp-synthetic", storage=storage).get_trials()) == 3
    assert [run.name for run in load_sweep(tmp_path / "b")] == ["0"]

    # a search on a test metric chooses on the test labels: both summaries say so
    on_test = [
        *search,
        "hydra.sweeper.metric=auc_micro",
        "hydra.sweeper.study_name=on-test",
        "hydra.sweeper.n_trials=1",
    ]
    multirun(monkeypatch, tmp_path, [*on_test, f"hydra.sweep.dir={tmp_path / 'c'}"])
    for name in ("optuna_study.md", "sweep_summary.md"):
        assert (
            "SELECTED ON TEST LABELS: the objective auc_micro is a test metric" in (tmp_path / "c" / name).read_text()
        )


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ],
)
def test_launcher_configs_compose_to_their_plugins(launcher: str, target: str, tmp_path: Path) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(
            "train",
            [f"hydra/launcher={launcher}", f"paths.root_dir={tmp_path}", "hydra.sweep.dir=s"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_ == target
    get_class(target)  # the plugin is installed
    if launcher == "slurm":
        assert cfg.hydra.launcher.submitit_folder == "s/.submitit/%j"
        assert cfg.hydra.launcher.tasks_per_node == 1
