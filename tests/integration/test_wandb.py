"""logger=wandb: an offline run of a tiny training holds every loss term, learning rates, sample grids and the test
report; the mode follows WANDB_MODE and the credentials. logger=tensorboard receives the same media."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hydra_runs import TINY_FFP, hydra_job, tiny_dataset
from wandb_records import offline_runs

from vad.app.train import train
from vad.errors import ConfigError
from vad.reporting.tracking import has_wandb_credentials, wandb_mode


def test_offline_wandb_run_holds_losses_learning_rates_and_media(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    run = tmp_path / "run"
    overrides = [*data, *TINY_FFP, "logger=many", "callbacks.sample_grids.every_n_steps=2", "tags=[tiny]"]
    train(hydra_job("train", overrides, run, tmp_path))

    (wb,) = offline_runs(run / "wandb")
    assert wb.exit_code == 0
    assert (wb.name, wb.group, wb.job_type) == ("run", "", "train")
    for term in ("intensity", "gradient", "flow", "adversarial", "g", "d"):
        assert f"train/loss_{term}" in wb.keys, term
    assert {"lr-generator", "lr-discriminator"} <= wb.keys  # the learning rates, by net
    for key in ("test/auc_micro", "test/auc_macro", "test/eer", "test/ap"):
        assert key in wb.keys, key
    # how the tested checkpoint was chosen is in the run summary, where a test-selected number must say so
    assert {"selection/checkpoint_selection", "selection/selected_on_test_labels"} <= wb.summary
    media = wb.folder / "files" / "media"
    images = sorted(p.relative_to(media / "images").as_posix().rsplit("_", 2)[0] for p in media.rglob("*.png"))
    assert images == ["test/roc", "test/samples", "test/score_curves", "train/samples"]
    (table,) = (media / "table" / "test").glob("per_video_auc_*.table.json")
    rows = json.loads(table.read_text())
    assert rows["columns"] == ["video", "frames", "anomalous", "auc"]
    assert [r[:3] for r in rows["data"]] == [["01", 5, 3], ["02", 4, 0]]

    assert (run / "samples" / "step0000002.png").is_file()  # the same grid stays in the run folder
    assert (run / "csv" / "metrics.csv").is_file()  # `many` = csv + wandb
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["wandb"]["id"] == wb.id
    assert metrics["wandb"]["mode"] == "offline"
    assert Path(metrics["wandb"]["dir"]) == wb.folder


def test_wandb_mode_follows_wandb_mode_then_credentials(tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine example.org login x password y\n")
    netrc.chmod(0o600)
    env = {"NETRC": str(netrc)}
    assert not has_wandb_credentials(env)
    assert wandb_mode("auto", env) == "offline"
    assert wandb_mode("online", env) == "online"
    assert wandb_mode("auto", env | {"WANDB_API_KEY": "k"}) == "online"
    assert wandb_mode("auto", env | {"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}) == "disabled"
    assert wandb_mode("online", env | {"WANDB_MODE": "dryrun"}) == "offline"

    netrc.write_text("machine api.wandb.ai login user password 0123456789abcdef\n")
    assert has_wandb_credentials(env)
    assert wandb_mode("auto", env) == "online"
    assert not has_wandb_credentials(env | {"WANDB_BASE_URL": "https://wandb.example.org"})
    with pytest.raises(ConfigError, match=r"logger\.wandb\.mode='cloud' is not one of"):
        wandb_mode("cloud", env)


def tensorboard_tags(folder: Path) -> dict[str, set[str]]:
    """Tags of the scalars, images and texts in the event files of ``folder`` (TFRecord: length, CRC, event, CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    tags: dict[str, set[str]] = {"scalar": set(), "image": set(), "text": set()}
    for path in folder.rglob("events.out.tfevents.*"):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    tags["scalar"].add(value.tag)
                elif kind == "image":
                    tags["image"].add(value.tag)
                elif value.metadata.plugin_data.plugin_name == "text":
                    tags["text"].add(value.tag)
    return tags


def test_tensorboard_run_holds_losses_and_media(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "tiny")
    run = tmp_path / "run"
    overrides = [*data, *TINY_FFP, "logger=tensorboard", "model.loss.flow=0", "callbacks.sample_grids.every_n_steps=2"]
    train(hydra_job("train", overrides, run, tmp_path))
    # One event file: a writer closed after fitting and reopened by the test wrote a second file, or, within the same
    # second, truncated the first (tensorboardX names files by the second), losing the training curves.
    assert len(list((run / "tensorboard").rglob("events.out.tfevents.*"))) == 1
    tags = tensorboard_tags(run / "tensorboard")
    assert {"train/loss_intensity", "train/loss_adversarial", "lr-generator", "test/auc_micro"} <= tags["scalar"]
    assert tags["image"] == {"train/samples", "test/score_curves", "test/roc", "test/samples"}
    assert tags["text"] == {"test/per_video_auc/text_summary"}
