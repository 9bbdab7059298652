"""Resuming: the training loader continues the data order mid-epoch, and a resumed run ends with the weights of an
uninterrupted one (CPU, same seed) -- from a checkpoint, and after a real kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from itertools import chain
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from hydra_runs import TINY_FFP, hydra_job, tiny_dataset
from tiny_runs import RESUMABLE, assert_same_training_state

from vad.app.train import train
from vad.data.datamodule.loaders import ResumableLoader

# 11 training clips in batches of 2: 6 batches per epoch; 7 iterations cross into the second epoch.


def train_loader(tmp_path: Path, data: list[str]) -> ResumableLoader:
    cfg = hydra_job("train", [*data, "dataset.batch_size=2"], tmp_path / "unused", tmp_path)
    datamodule = instantiate(cfg.dataset, _convert_="all")
    datamodule.setup("fit")
    return datamodule.train_dataloader()


def order(batches: Any) -> list[list[tuple[str, int]]]:
    return [list(zip(b["video"], b["index"].tolist(), strict=True)) for b in batches]


def test_training_loader_continues_the_data_order_mid_epoch(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    loader = train_loader(tmp_path, data)
    epoch0, epoch1 = order(loader), order(loader)
    assert len(epoch0) == len(loader) == 6
    assert epoch0 != epoch1
    assert sorted(chain.from_iterable(epoch0)) == sorted(chain.from_iterable(epoch1))  # every clip, once each

    interrupted = train_loader(tmp_path, data)
    batches = iter(interrupted)
    seen = [next(batches) for _ in range(4)]
    assert order(seen) == epoch0[:4]
    state = interrupted.state_dict()
    assert state == {"epoch": 0, "batches": 4}

    resumed = train_loader(tmp_path, data)
    resumed.load_state_dict(state)
    assert order(resumed) == epoch0[4:]
    assert order(resumed) == epoch1  # then the next epoch, as an uninterrupted loader has it
    assert resumed.state_dict() == {"epoch": 1, "batches": 6}

    at_epoch_end = train_loader(tmp_path, data)
    at_epoch_end.load_state_dict({"epoch": 0, "batches": 6})
    assert order(at_epoch_end) == epoch1


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train(hydra_job("train", [*data, *TINY_FFP, *RESUMABLE], full, tmp_path))
    middle = full / "checkpoints" / "step0000003.ckpt"  # the state a run killed after iteration 3 leaves
    assert torch.load(middle, weights_only=True)["global_step"] == 3
    train(hydra_job("train", [*data, *TINY_FFP, *RESUMABLE, f"ckpt_path={middle}"], resumed, tmp_path))
    final = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 7
    assert_same_training_state(full / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")


def vad_train(args: list[str], home: Path) -> subprocess.Popen:
    env = dict(os.environ, VAD_HOME=str(home))
    return subprocess.Popen([sys.executable, "-m", "vad.train", *args], env=env, stdout=subprocess.DEVNULL)


@pytest.mark.slow
def test_a_killed_run_resumed_with_ckpt_path_last_ends_with_the_uninterrupted_weights(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    settings = [*data, *TINY_FFP, *RESUMABLE, "trainer.max_steps=40", "callbacks.model_checkpoint.save_top_k=0"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert vad_train([*settings, f"hydra.run.dir={full}"], tmp_path).wait(timeout=900) == 0

    proc = vad_train([*settings, f"hydra.run.dir={killed}"], tmp_path)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    step = torch.load(last, weights_only=True)["global_step"]
    assert 0 < step < 40, f"the run was not killed mid-way (last.ckpt at step {step})"

    resume = vad_train([*settings, f"hydra.run.dir={killed}", "ckpt_path=last"], tmp_path)
    assert resume.wait(timeout=900) == 0
    assert_same_training_state(full / "checkpoints" / "last.ckpt", last)
