"""Repeat runs on one machine give identical results: the quickstart and every CPU preset, run twice from scratch
with the same seed, write the same scores.csv, the same metrics and the same final weights.

What may vary across machines (and is not tested here) is stated in the README: the CPU's instruction set and the
thread count change the order of floating-point sums inside convolutions, so two machines agree to a few 1e-3 of AUC,
not bit for bit.

The fast test runs the quickstart's configuration for a few steps on the tiny synthetic set; the slow ones run the
quickstart whole and every ``*_ped2_cpu*`` preset shortened to a few steps on the real Ped2 copy (skipped without it):
the same code paths as the full presets, whose results tables each come from one run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra_runs import hydra_job, tiny_synthetic

from vad import config_dir
from vad.app.train import train

CPU_PRESETS = sorted(p.stem for p in (config_dir() / "experiment").glob("*_ped2_cpu*.yaml"))
#: what differs between two runs by construction: where and when they ran
VOLATILE = {"run_dir", "train_seconds", "test_seconds", "started", "finished", "host", "wall_seconds", "run_id",
            "val_plan", "checkpoint", "ckpt_path", "seconds", "timestamp", "created"}  # fmt: skip


def comparable(value: object) -> object:
    """metrics.json without its volatile entries (paths and times), recursively."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k not in VOLATILE and not k.endswith("_seconds")}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def run_twice(tmp_path: Path, overrides: list[str]) -> list[Path]:
    runs = []
    for name in ("first", "second"):
        run = tmp_path / name
        train(hydra_job("train", [*overrides, "callbacks.progress_bar.refresh_rate=0"], run, tmp_path))
        runs.append(run)
    return runs


def assert_identical(first: Path, second: Path) -> None:
    assert (first / "scores.csv").read_bytes() == (second / "scores.csv").read_bytes()
    a = json.loads((first / "metrics.json").read_text())
    b = json.loads((second / "metrics.json").read_text())
    assert comparable(a) == comparable(b)
    weights_a = torch.load(first / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    weights_b = torch.load(second / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert weights_a.keys() == weights_b.keys()
    for key, value in weights_a.items():
        assert torch.equal(value, weights_b[key]), key


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])  # bf16: as experiment=ffp_ped2_cpu trains
# the quickstart logs every 20 iterations; a shortened run of it has fewer batches per epoch, as intended here
@pytest.mark.filterwarnings("ignore:The number of training batches .* is smaller than the logging interval")
def test_the_quickstart_configuration_repeats_exactly(tmp_path: Path, precision: str) -> None:
    data = tiny_synthetic(tmp_path / "synthetic")
    overrides = ["experiment=quickstart", *data, "trainer.max_steps=12", "model.generator.features=4",
                 "model.discriminator.features=[8,8,8,8]", f"trainer.precision={precision}"]  # fmt: skip
    first, second = run_twice(tmp_path, overrides)
    assert_identical(first, second)
    if precision != "32-true":
        # and it really trained in that precision: a float32 run of the same seed ends with other weights
        other = tmp_path / "float32"
        train(hydra_job("train", [*overrides, "trainer.precision=32-true", "callbacks.progress_bar.refresh_rate=0"],
                        other, tmp_path))  # fmt: skip
        mine = torch.load(first / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        theirs = torch.load(other / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        assert any(not torch.equal(value, theirs[key]) for key, value in mine.items())


@pytest.mark.slow
def test_the_quickstart_repeats_exactly(tmp_path: Path) -> None:
    first, second = run_twice(tmp_path, ["experiment=quickstart", f"dataset.root={tmp_path / 'synthetic'}"])
    assert_identical(first, second)


@pytest.mark.slow
@pytest.mark.parametrize("preset", CPU_PRESETS)
def test_cpu_presets_repeat_exactly(preset: str, ped2_root: Path, tmp_path: Path) -> None:
    overrides = [f"experiment={preset}", f"paths.data_dir={ped2_root.parent}", "trainer.max_steps=6",
                 f"paths.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    first, second = run_twice(tmp_path, overrides)
    assert_identical(first, second)
