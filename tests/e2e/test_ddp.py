"""trainer=ddp_sim: two real processes over gloo train a GAN method (unused parameters in each step), end with
identical weights, and score every test frame exactly once (slow); the test sharding of whole videos (fast)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from hydra_runs import TINY_FFP, hydra_job, tiny_dataset

from vad.data.datamodule.loaders import VideoShards

#: the tiny set's test frames that have a prediction: video 01 (9 frames) and 02 (8 frames), t = 4 inputs
SCORED = [("01", f) for f in range(4, 9)] + [("02", f) for f in range(4, 8)]


def test_video_shards_give_each_rank_whole_videos_and_every_item_once(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    datamodule = instantiate(hydra_job("train", data, tmp_path / "run", tmp_path).dataset, _convert_="all")
    datamodule.setup("test")
    dataset = datamodule.test_dataset
    assert list(dataset.clips_per_video) == [5, 4]
    shards = [list(VideoShards(dataset, num_replicas=2, rank=r)) for r in range(2)]
    assert shards == [[0, 1, 2, 3, 4], [5, 6, 7, 8]]
    three = [list(VideoShards(dataset, num_replicas=3, rank=r)) for r in range(3)]
    assert three == [[0, 1, 2, 3, 4], [], [5, 6, 7, 8]]  # fewer videos than ranks: one rank scores nothing


@pytest.mark.slow  # the sharding: test_video_shards_give_each_rank_whole_videos_and_every_item_once
def test_ddp_sim_keeps_replicas_identical_and_scores_every_test_frame_once(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    run = tmp_path / "run"
    # the real CLI: Lightning starts the second rank by re-running this command with the same run folder
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vad.train",
            *data,
            *TINY_FFP,
            "trainer=ddp_sim",
            "model.loss.flow=0",
            f"hydra.run.dir={run}",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, VAD_HOME=str(tmp_path)),
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    digests = metrics["replica_digests"]
    assert len(digests) == 2
    assert digests[0] == digests[1]  # both ranks hold the same generator and discriminator weights
    assert metrics["frames"] == len(SCORED)
    with open(run / "scores.csv", newline="") as f:
        rows = [(r["video"], int(r["frame"])) for r in csv.DictReader(f)]
    assert rows == SCORED  # each frame once, none lost to sharding, none duplicated by padding


@pytest.mark.parametrize("trainer", ["ddp", "ddp_sim"])
def test_ddp_configs_find_unused_parameters(trainer: str, tmp_path: Path) -> None:
    cfg = hydra_job("train", [f"trainer={trainer}"], tmp_path / "run", tmp_path)
    strategy = instantiate(cfg.trainer.strategy)
    assert strategy._ddp_kwargs["find_unused_parameters"] is True


@pytest.mark.slow
def test_ddp_jobs_of_a_multirun_each_train_in_their_own_folder(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "vad.train", "-m", *data, *TINY_FFP, "trainer=ddp_sim", "model.loss.flow=0"]
    proc = subprocess.run(
        [*command, "model.loss.adversarial=0,0.05", f"hydra.sweep.dir={sweep}"],
        capture_output=True,
        text=True,
        env=dict(os.environ, VAD_HOME=str(tmp_path)),
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in ("0", "1"):  # the second rank of each job joined that job (no sweep of its own, no stale group)
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["world_size"] == 2
        assert len(set(metrics["replica_digests"])) == 1
    assert not (tmp_path / "logs").exists()  # no rank wrote a single-run folder elsewhere
