"""Lightning callbacks of the suite: checkpoints, training sample grids, and the state a non-finite loss leaves.

    <run>/checkpoints/last.ckpt        RunCheckpoint: the final state of training (and periodic step*.ckpt)
    <run>/samples/step0000500.png      SampleGrids: last input / prediction / target / error heat map, every N steps
    <run>/checkpoints/nonfinite_step0000123.ckpt   NonFiniteCheckpoint: the training state at the failing step

    callbacks = [SampleGrids(every_n_steps=500), NonFiniteCheckpoint("<run>/checkpoints")]

``RunCheckpoint`` and ``SampleGrids`` are configured in ``conf/callbacks/default.yaml``; ``NonFiniteCheckpoint`` is
part of every training run (``vad.build.build_trainer`` adds it), since a diverged run must always leave its state.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from vad import report, tracking
from vad.methods.base import NonFiniteLossError, VADModule


def sample_rows(samples: Mapping[str, np.ndarray] | None, count: int = 4) -> list[list[np.ndarray]]:
    """Rows of [last input, prediction, target, error map] images for the sample grid, from (N, C, H, W) arrays in
    [-1, 1]; the error map is the channel mean of |prediction - target|."""
    if not samples:
        return []

    def image(x: np.ndarray) -> np.ndarray:
        return x[0] if x.shape[0] == 1 else np.transpose(x, (1, 2, 0))

    rows = []
    for i in range(min(count, len(samples["target"]))):
        error = np.abs(samples["prediction"][i] - samples["target"][i]).mean(axis=0)
        rows.append([image(samples["input"][i]), image(samples["prediction"][i]), image(samples["target"][i]), error])
    return rows


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, except that ``last.ckpt`` always ends up holding the final state of training.

    With a periodic interval (``every_n_train_steps``) Lightning writes last.ckpt only at the periodic saves, so a run
    whose ``max_steps`` is not a multiple of the interval would be tested, and resumed, from an older state.
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


class SampleGrids(Callback):
    """Every ``every_n_steps`` iterations, draw the method's prediction of the current training batch.

    The grid (``rows`` samples of the batch) is written to ``<run>/samples/step<global_step>.png`` and logged as
    ``train/samples`` to every tracker that shows images. Runs on global rank 0 only, in eval mode without gradients.
    """

    def __init__(self, every_n_steps: int = 500, rows: int = 4) -> None:
        if every_n_steps < 1 or rows < 1:
            raise ValueError(f"SampleGrids: every_n_steps and rows must be >= 1, got {every_n_steps}, {rows}")
        self.every_n_steps = every_n_steps
        self.rows = rows

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps or not trainer.is_global_zero or not isinstance(pl_module, VADModule):
            return
        part = {k: v[: self.rows] for k, v in batch.items()}
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            images = {k: v.detach().float().cpu().numpy() for k, v in pl_module.sample_images(part).items()}
        pl_module.train(was_training)
        path = Path(trainer.default_root_dir) / "samples" / f"step{step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        report.plot_sample_grid(path, sample_rows(images, self.rows))
        tracking.publish_images(trainer.loggers, {"train/samples": path}, step)


class NonFiniteCheckpoint(Callback):
    """When training stops on a non-finite loss, save the state at that step and name the file in the error.

    The checkpoint (``nonfinite_step<global_step>.ckpt`` in ``dirpath``) holds the weights, optimiser and scheduler
    states and counters of the failing step; ``last.ckpt`` is left as the last good state to resume from with a lower
    learning rate. Under DDP every rank stops at the same step (``VADModule.check_finite`` decides collectively), so
    the save's barrier is reached by all of them.
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, NonFiniteLossError) or not trainer.training:
            return
        path = self.dirpath / f"nonfinite_step{trainer.global_step:07d}.ckpt"
        trainer.save_checkpoint(path)
        exception.args = (f"{exception.args[0]}; the training state of that step is saved in {path}",)
