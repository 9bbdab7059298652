"""vad.train / vad.evaluate on the real configs: presets compose, train -> evaluate round trip, typos, run folders."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from hydra_runs import TINY_FFP, hydra_job, tiny_dataset
from omegaconf import OmegaConf

from vad import config_dir
from vad.app.build import build_model, build_trainer
from vad.app.callbacks import WeightEMA
from vad.app.evaluate import evaluate
from vad.app.overrides import check_overrides
from vad.app.train import train
from vad.errors import ConfigError, DataError
from vad.evaluation.fusion import minmax
from vad.evaluation.smoothing import smooth

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
METRICS = ("auc_micro", "auc_macro", "eer", "ap", "auc_micro_raw")
DEFAULT_MODEL = next(e.model for e in OmegaConf.load(config_dir() / "train.yaml").defaults if "model" in e)


def preset_model(experiment: str) -> str:
    """The model group a preset chooses, read from its defaults list and those of the presets it extends."""
    model = DEFAULT_MODEL
    for entry in OmegaConf.load(config_dir() / "experiment" / f"{experiment}.yaml").get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            model = preset_model(entry)
        elif not isinstance(entry, str):
            model = entry.get("override /model", model)
    return model


#: the preset each method is instantiated with: its first in sorted order (the others are composed only)
ONE_PER_METHOD: dict[str, str] = {}
for _experiment in EXPERIMENTS:
    ONE_PER_METHOD.setdefault(preset_model(_experiment), _experiment)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_one_per_method_instantiates(experiment: str, tmp_path: Path) -> None:
    cfg = hydra_job("train", [f"experiment={experiment}"], tmp_path / "run", tmp_path)
    model_group = HydraConfig.get().runtime.choices.model
    assert model_group == preset_model(experiment)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation of the preset resolves
    # the callbacks of every preset (cheap): a preset's weight average among them
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]
    if (cfg.get("callbacks") or {}).get("ema") is not None:
        assert any(isinstance(c, WeightEMA) for c in callbacks)
    if ONE_PER_METHOD[model_group] != experiment:
        return
    if cfg.flow.get("checkpoint"):
        cfg.flow.checkpoint = None  # random FlowNet2-SD weights: the published file is not on test machines
    datamodule = instantiate(cfg.dataset, _convert_="all")
    model = build_model(cfg)
    assert datamodule.clip_len == model.clip_len == cfg.model.clip_len
    assert model.channels == cfg.dataset.channels
    trainer = build_trainer(cfg, tmp_path / "run")  # the callbacks and loggers too
    assert {type(c) for c in callbacks} <= {type(c) for c in trainer.callbacks}


def test_train_writes_the_run_and_evaluate_reproduces_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    run = tmp_path / "run"
    metrics = train(hydra_job("train", [*data, *TINY_FFP], run, tmp_path))
    for name in ("scores.csv", "metrics.json", "score_curves.png", "roc.png", "samples.png", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["checkpoint_selection"] == "last"
    assert saved["train_steps"] == 3
    assert saved["train_seconds"] > 0
    assert saved["test_seconds"] > 0
    assert saved["label_source"] == "testing/labels (per-video .npy)"
    assert saved["frames"] == metrics["frames"] == (9 - 4) + (8 - 4)
    header = (run / "scores.csv").read_text().splitlines()[0]
    assert header == "video,frame,label,score,psnr,patch_max,intensity_error,gradient_error,flow_error"

    # the real CLI, in a fresh process: the checkpoint's config rebuilds the same model and data
    env = dict(os.environ, VAD_HOME=str(tmp_path))
    out = tmp_path / "eval"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vad.evaluate",
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            f"hydra.run.dir={out}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "micro AUC" in proc.stdout
    assert "micro AUC" in (out / "eval.log").read_text()  # the summary is in the run's log too
    again = json.loads((out / "metrics.json").read_text())
    for key in METRICS:
        assert again[key] == pytest.approx(saved[key], abs=1e-6), key
    assert (out / "scores.csv").read_text() == (run / "scores.csv").read_text()

    # select=best_on_test scans every checkpoint of the run on the test set, and says that the pick is optimistic
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    ckpt["state_dict"] = {k: torch.zeros_like(v) if "generator" in k else v for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, run / "checkpoints" / "blank.ckpt")  # a second, different model (constant prediction)
    capsys.readouterr()
    # in-process, the checkpoint's group choice (dataset=folder) is given as the CLI adds it: the tiny set is tested
    best_on_test = [f"ckpt_path={run}", "select=best_on_test", "dataset=folder"]
    evaluate(hydra_job("eval", best_on_test, tmp_path / "best", tmp_path))
    scan = json.loads((tmp_path / "best" / "best_on_test_scan.json").read_text())
    assert sorted(Path(k).name for k in scan) == ["blank.ckpt", "last.ckpt"]
    best = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert best["checkpoint"] == max(scan, key=scan.get)
    assert best["auc_micro"] == pytest.approx(max(scan.values()))
    assert "optimistic" in best["checkpoint_selection"]
    assert best["selected_on_test_labels"] is True
    assert "optimistic" in capsys.readouterr().out.splitlines()[-1]
    assert best["frames"] == saved["frames"]


def test_a_run_folder_is_never_reused(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds a run; resume it with ckpt_path=last"):
        train(hydra_job("train", [*data, *TINY_FFP], run, tmp_path))
    (run / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds a finished run"):
        evaluate(hydra_job("eval", [*data, "model=copy_last"], run, tmp_path))


def test_copy_last_needs_no_checkpoint_and_trained_models_do(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    metrics = evaluate(hydra_job("eval", [*data, "model=copy_last"], tmp_path / "a", tmp_path))
    assert metrics["frames"] == 9
    # model.smoothing (every method, through vad.app.build): the protocol's temporal Gaussian, recorded with the result
    smoothed = evaluate(hydra_job("eval", [*data, "model=copy_last", "model.smoothing=1"], tmp_path / "s", tmp_path))
    assert smoothed["smoothing"] == 1.0
    assert smoothed["normalisation"] == "per-video min-max after a temporal Gaussian (sigma 1 frames)"
    rows = list(csv.DictReader((tmp_path / "s" / "scores.csv").open()))
    expected = np.concatenate(
        [
            minmax(smooth([-float(r["psnr"]) for r in rows if r["video"] == name], 1.0))
            for name in dict.fromkeys(r["video"] for r in rows)
        ]
    )
    scores = [float(r["score"]) for r in rows]
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    unsmoothed = [minmax([-float(r["psnr"]) for r in rows if r["video"] == name]) for name in ("01", "02")]
    assert not np.allclose(scores, np.concatenate(unsmoothed), atol=1e-3)
    with pytest.raises(ConfigError, match=r"model\.smoothing=-1 must be a finite number of frames >= 0"):
        evaluate(hydra_job("eval", [*data, "model=copy_last", "model.smoothing=-1"], tmp_path / "n", tmp_path))
    with pytest.raises(ConfigError, match="has trainable weights: pass ckpt_path="):
        evaluate(hydra_job("eval", data, tmp_path / "b", tmp_path))
    with pytest.raises(ConfigError, match="has no weights to train"):
        train(hydra_job("train", [*data, "model=copy_last"], tmp_path / "c", tmp_path))


def test_missing_dataset_says_how_to_get_it(tmp_path: Path) -> None:
    cfg = hydra_job("train", ["dataset=ped2", "dataset.num_workers=0", *TINY_FFP], tmp_path / "run", tmp_path)
    with pytest.raises(DataError, match=r"python -m vad\.prepare dataset=ped2 source=<download folder>"):
        train(cfg)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["model.loss.flwo=1"],
            "unknown config key 'model.loss.flwo' (did you mean 'model.loss.flow'?); valid keys under 'model.loss': "
            "adversarial, flow, gradient, intensity",
        ),
        (
            ["model=ffpp"],
            "unknown choice 'ffpp' for model (did you mean 'ffp'?); valid choices: amc, amc_comemory, copy_last, ffp, "
            "mnad,",
        ),
        (["-m", "dataset=ped2", "model.optim.lr=1"], "unknown config key 'model.optim.lr'"),
        (["experiment=ffp_ped3"], "unknown choice 'ffp_ped3' for experiment (did you mean 'ffp_ped2'?)"),
    ],
)
def test_typos_fail_at_compose_time_with_the_valid_choices(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_overrides("train", args)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_valid_overrides_and_sweeps_pass_the_check() -> None:
    check_overrides("train", ["-m", "model.loss.flow=0,1,2", "model.loss.adversarial=0,0.05", "hydra.run.dir=x"])
    check_overrides("train", ["experiment=ffp_ped2", "+tags=[a]", "--cfg", "job"])


def test_a_flow_term_through_dis_fails_at_start_naming_the_estimator_and_the_fix(tmp_path: Path) -> None:
    cfg = hydra_job("train", ["model.loss.flow=2", "flow=dis"], tmp_path / "run", tmp_path)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert str(err.value) == (
        "model.loss.flow=2.0 backpropagates through the flow estimator, but DISFlow (flow) is not "
        "differentiable, so the term would give no gradient: choose flow=lk (CPU, weight-free) or flow=flownet2sd, "
        "or set model.loss.flow=0"
    )
    assert not (tmp_path / "data").exists()  # refused before any data was generated or cached
