"""Model selection without test labels: the validation AUC on pseudo-anomalies in held-out videos, the best-val
checkpoint (a planted ranking, and real runs), the refusal without validation videos, every method trained with a
pseudo-anomaly plug-in through config only, and runs whose test labels are garbage choosing exactly the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra_runs import TINY_FFP, hydra_job, tiny_synthetic
from tiny_runs import VAL, logged
from torch.utils.data import DataLoader

from vad.app.callbacks import BestValCheckpoint
from vad.app.train import train
from vad.data.synthetic import generate
from vad.errors import ConfigError

SYNTHETIC = {"num_train": 2, "num_test": 2, "frames_per_video": 36, "size": [32, 32]}


def test_best_val_tests_the_checkpoint_with_the_best_validation_auc(tmp_path: Path) -> None:
    data = tiny_synthetic(tmp_path / "synthetic")
    run = tmp_path / "run"
    overrides = [*data, *TINY_FFP, *VAL, "model.loss.flow=0", "trainer.max_steps=6", "test_checkpoint=best_val"]
    metrics = train(hydra_job("train", overrides, run, tmp_path))
    saved = json.loads((run / "metrics.json").read_text())
    aucs = logged(run, "val/auc_micro")
    assert len(aucs) >= 4  # steps 2, 4, 6 during training, then the final weights once more
    assert saved["val_auc_micro"] == pytest.approx(max(aucs), abs=1e-6)
    assert metrics["val_auc_micro"] == saved["val_auc_micro"]
    assert saved["checkpoint_selection"].startswith("best_val")
    assert saved["selected_on_test_labels"] is False
    assert Path(saved["checkpoint"]).parent == run / "checkpoints"
    plan = json.loads((run / "val_pseudo.json").read_text())
    assert [v["anomalous_frames"] > 0 for v in plan["videos"]] == [True]
    assert 0.0 <= saved["val_auc_macro_final"] <= 1.0


def test_best_val_without_validation_videos_says_how_to_enable_them(tmp_path: Path) -> None:
    cfg = hydra_job(
        "train", [*tiny_synthetic(tmp_path / "s"), *TINY_FFP, "test_checkpoint=best_val"], tmp_path / "r", tmp_path
    )
    with pytest.raises(ConfigError, match=r"no validation videos: hold some .* dataset.val_videos=2"):
        train(cfg)
    cfg = hydra_job(
        "train", [*tiny_synthetic(tmp_path / "s"), *TINY_FFP, "test_checkpoint=best"], tmp_path / "q", tmp_path
    )
    with pytest.raises(ConfigError, match=r"test_checkpoint=best is not one of \['last', 'best_val'\]"):
        train(cfg)


class _Planted(L.LightningModule):
    """Its one weight counts the training steps; each validation logs the next AUC of a planted list."""

    def __init__(self, aucs: list[float]) -> None:
        super().__init__()
        self.steps = torch.nn.Parameter(torch.zeros(()), requires_grad=False)
        self.aucs = list(aucs)
        self.seen = 0

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.steps += 1
        return (self.steps * 0 + batch.sum() * 0).requires_grad_()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        pass

    def on_validation_epoch_end(self) -> None:
        self.log("val/auc_micro", self.aucs[self.seen])
        self.seen += 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


def test_the_best_val_checkpoint_follows_a_planted_ranking(tmp_path: Path) -> None:
    aucs = [0.61, 0.83, 0.97, 0.74, 0.97, 0.5]  # the best at the 3rd validation (step 6); a later tie does not win
    model = _Planted(aucs)
    best = BestValCheckpoint(tmp_path / "checkpoints")
    trainer = L.Trainer(
        accelerator="cpu", max_steps=12, val_check_interval=2, check_val_every_n_epoch=None, logger=False,
        callbacks=[best], enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    data = DataLoader(torch.zeros(100, 1), batch_size=1)
    trainer.fit(model, data, DataLoader(torch.zeros(1, 1), batch_size=1))
    assert model.seen == len(aucs)
    assert Path(best.best_model_path).name == "best-val-step0000006.ckpt"
    assert float(best.best_model_score) == pytest.approx(0.97)
    state = torch.load(best.best_model_path, weights_only=False)["state_dict"]
    assert state["steps"].item() == 6.0
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["best-val-step0000006.ckpt"]


TINY_METHODS = {
    "ffp": [*TINY_FFP, "model.loss.flow=0"],
    "mnad": ["model=mnad", "model.net.features=2", "model.memory.num_items=4"],
    "mnad_recon": ["model=mnad_recon", "model.net.features=2", "model.memory.num_items=4"],
    "rgan": ["model=rgan", "model.generator.features=4", "model.generator.depth=2", "model.generator.hidden=[4]",
             "model.discriminator.features=[4,8,8,8]"],
    "rgan_latent": ["model=rgan_latent", "model.generator.features=4", "model.generator.depth=2",
                    "model.generator.latent=4", "model.generator.hidden=[4]", "model.discriminator.features=[4,8,8,8]"],
    "pseudo_anomaly": ["model=pseudo_anomaly", "model.generator.features=4", "model.generator.depth=2",
                       "model.discriminator.features=[4,8,8,8]", "model.classifier.features=[4,8,8,8]"],
    "rvae": ["model=rvae", "model.generator.features=4", "model.generator.blocks=[1,1]", "model.generator.latent=2",
             "model.generator.hidden=[4]"],
}  # fmt: skip
RUN = ["debug=tiny", "dataset.batch_size=4"]  # fmt: skip


@pytest.mark.parametrize("method", list(TINY_METHODS))
@pytest.mark.parametrize(("plugin", "objective"), [("mixed", "negative"), ("patch", "not_reconstruct")])
def test_every_method_trains_with_a_pseudo_plugin_through_config_only(
    method: str, plugin: str, objective: str, tmp_path: Path
) -> None:
    overrides = [
        *tiny_synthetic(tmp_path / "synthetic"), *TINY_METHODS[method], *RUN, f"pseudo={plugin}",
        f"dataset.pseudo.objective={objective}", "dataset.pseudo.probability=0.5", "dataset.val_videos=1", "test=false",
    ]  # fmt: skip
    run = tmp_path / "run"
    returned = train(hydra_job("train", overrides, run, tmp_path))
    assert 0.0 <= returned["val_auc_micro"] <= 1.0  # the final weights, validated after training
    negative = logged(run, "train/loss_pseudo_negative")
    if objective == "negative":  # 12 items at probability 0.5, fixed seed: some are pseudo-anomalies
        assert negative
        assert all(-0.05 - 1e-6 <= v < 0 for v in negative)  # bounded by weight x bound
    else:
        assert not negative
    assert (run / "checkpoints" / "last.ckpt").is_file()


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=False)["state_dict"]


def test_garbage_test_labels_change_no_checkpoint_and_no_choice(tmp_path: Path) -> None:
    real = tmp_path / "real"
    generate(real, seed=0, **SYNTHETIC)
    garbage = tmp_path / "garbage"
    shutil.copytree(real, garbage)
    rng = np.random.default_rng(7)
    for path in sorted((garbage / "testing" / "labels").glob("*.npy")):
        labels = np.load(path)
        np.save(path, rng.integers(0, 2, labels.shape).astype(labels.dtype))  # same format, random values

    chosen = {}
    for name, root in (("real", real), ("garbage", garbage)):
        data = [*tiny_synthetic(root), *VAL, "test_checkpoint=best_val", "model.loss.flow=0", "trainer.max_steps=4"]
        results = []
        for job, weight in enumerate((0.0, 1.0)):  # a two-job "sweep" over the gradient weight
            run = tmp_path / f"{name}{job}"
            metrics = train(hydra_job("train", [*data, *TINY_FFP, f"model.loss.gradient={weight}"], run, tmp_path))
            saved = json.loads((run / "metrics.json").read_text())
            results.append((metrics["val_auc_micro"], Path(saved["checkpoint"]).name, _state(saved["checkpoint"])))
        chosen[name] = results
        chosen[name + "_auc"] = [metrics["auc_micro"]]
    for (auc_a, file_a, state_a), (auc_b, file_b, state_b) in zip(chosen["real"], chosen["garbage"], strict=True):
        assert auc_a == auc_b
        assert file_a == file_b
        assert state_a.keys() == state_b.keys()
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    pick = [int(np.argmax([r[0] for r in chosen[n]])) for n in ("real", "garbage")]
    assert pick[0] == pick[1]  # the sweep's winner by validation AUC
    assert chosen["real_auc"] != chosen["garbage_auc"]  # while the test numbers do see the labels
