"""Override lists and checks that several test modules share (tests never import each other: they import these)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

#: a short FFP training with checkpoints every 3 iterations, to interrupt and resume
RESUMABLE = [
    "dataset.batch_size=2",
    "trainer.max_steps=7",
    "model.loss.flow=0",  # the flow estimator plays no part in resuming; without it the test is 3x faster
    "callbacks.model_checkpoint.every_n_train_steps=3",
    "callbacks.model_checkpoint.save_top_k=-1",
    "callbacks.sample_grids.every_n_steps=100",
    "test=false",
]

#: validation on one held-out video every 2 iterations
VAL = ["dataset.val_videos=1", "trainer.val_check_interval=2", "trainer.check_val_every_n_epoch=null"]

#: tiny AMC and co-memory nets
TINY_AMC = [
    "model=amc",
    "model.generator.features=4",
    "model.generator.depth=2",
    "model.discriminator.features=[4,8,8,8]",
    "model.patch.window=8",
]
TINY_COMEMORY = [
    "model=amc_comemory",
    "model.clip_len=3",
    "model.net.features=2",
    "model.net.appearance_items=3",
    "model.net.motion_items=4",
    "model.patch.window=8",
]


def assert_same_training_state(a: Path, b: Path) -> None:
    first = torch.load(a, map_location="cpu", weights_only=True)
    second = torch.load(b, map_location="cpu", weights_only=True)
    assert first["global_step"] == second["global_step"]
    assert first["state_dict"].keys() == second["state_dict"].keys()
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key]), key
    for opt_a, opt_b in zip(first["optimizer_states"], second["optimizer_states"], strict=True):
        for slot, state in opt_a["state"].items():
            for name, value in state.items():
                assert torch.equal(value, opt_b["state"][slot][name]), (slot, name)
    assert first["lr_schedulers"] == second["lr_schedulers"]


def logged(run: Path, key: str) -> list[float]:
    """The values a run logged for ``key`` (none when the key never appears)."""
    with open(run / "csv" / "metrics.csv", newline="") as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]
