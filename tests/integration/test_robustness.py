"""A non-finite loss stops training with its step and term after saving the state; run folders are never reused;
checkpoints are written atomically."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra_runs import TINY_FFP, hydra_job, tiny_dataset
from wandb_records import offline_runs

from vad.app.build import build_model, build_trainer
from vad.app.cli import check_run_folder
from vad.app.train import train
from vad.checkpoint_io import AtomicCheckpointIO
from vad.errors import ConfigError
from vad.methods.optimisation import NonFiniteLossError


def test_non_finite_loss_stops_with_step_and_term_and_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    run = tmp_path / "run"
    # A learning rate of 1e30 throws the generator's weights to ~1e30 in the first step: the next loss overflows.
    cfg = hydra_job("train", [*data, *TINY_FFP, "model.optim.lr_g=1e30", "logger=many"], run, tmp_path)
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg)
    ckpt = run / "checkpoints" / "nonfinite_step0000001.ckpt"
    assert re.fullmatch(
        r"loss term 'intensity' is (inf|nan) at step 1; lower the learning rate or the term's weight "
        r"\(model\.loss / model\.optim\), or set model\.grad_clip; "
        rf"the training state of that step is saved in {re.escape(str(ckpt))}",
        str(err.value),
    )
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 1
    model = build_model(cfg)
    model.load_state_dict(state["state_dict"])  # loadable into the method it came from
    assert len(state["optimizer_states"]) == 2
    assert not (run / "metrics.json").exists()
    (wb,) = offline_runs(run / "wandb")
    assert wb.exit_code == 1  # the tracker run is closed as failed


def test_a_run_folder_named_on_the_command_line_is_checked_before_hydra_writes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    check_run_folder([f"hydra.run.dir={run}"], "ckpt_path")  # new folder: fine
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds a run; resume it with ckpt_path=last"):
        check_run_folder([f"hydra.run.dir={run}", "model=ffp"], "ckpt_path")
    check_run_folder([f"hydra.run.dir={run}", "ckpt_path=last"], "ckpt_path")  # resuming it: fine
    with pytest.raises(ConfigError, match="already holds a run"):
        check_run_folder([f"hydra.run.dir={run}", "ckpt_path=last"], None)  # vad.evaluate never resumes
    (run / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds a finished run"):
        check_run_folder([f"hydra.run.dir={run}", "ckpt_path=last"], "ckpt_path")

    sweep = tmp_path / "sweep"
    check_run_folder(["-m", f"hydra.sweep.dir={sweep}", "seed=1,2"], "ckpt_path")
    (sweep / "0").mkdir(parents=True)
    with pytest.raises(ConfigError, match=rf"hydra\.sweep\.dir={re.escape(str(sweep))} is not empty"):
        check_run_folder(["--multirun", f"hydra.sweep.dir={sweep}", "seed=1,2"], "ckpt_path")


def test_checkpoints_are_replaced_atomically(tmp_path: Path) -> None:
    cfg = hydra_job("train", TINY_FFP, tmp_path / "run", tmp_path)
    assert isinstance(build_trainer(cfg, tmp_path / "run").strategy.checkpoint_io, AtomicCheckpointIO)

    folder = tmp_path / "checkpoints"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "weights": torch.ones(3)}, folder / "last.ckpt")
    with pytest.raises(Exception, match="lambda"):  # fails half-way through writing
        io.save_checkpoint({"step": 2, "weights": torch.zeros(3), "bad": lambda: 0}, folder / "last.ckpt")
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"]  # no temporary file left behind
    kept = torch.load(folder / "last.ckpt", weights_only=True)
    assert kept["step"] == 1
    assert torch.equal(kept["weights"], torch.ones(3))
