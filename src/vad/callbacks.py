"""Lightning callbacks of the suite: checkpoints, training sample grids, and the state a non-finite loss leaves.

    <run>/checkpoints/last.ckpt        RunCheckpoint: the final state of training (and periodic step*.ckpt)
    <run>/samples/step0000500.png      SampleGrids: the method's sample panels of the current batch, every N steps
    <run>/checkpoints/nonfinite_step0000123.ckpt   NonFiniteCheckpoint: the training state at the failing step
    <run>/checkpoints/best-val-step0000400.ckpt    BestValCheckpoint: the best validation micro AUC so far

    callbacks = [SampleGrids(every_n_steps=500), NonFiniteCheckpoint("<run>/checkpoints")]

``RunCheckpoint`` and ``SampleGrids`` are configured in ``conf/callbacks/default.yaml``; ``NonFiniteCheckpoint`` is
part of every training run (``vad.build.build_trainer`` adds it), since a diverged run must always leave its state;
``BestValCheckpoint`` of every run with held-out validation videos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from vad import panels, report, tracking
from vad.methods.base import NonFiniteLossError, VADModule


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, except that ``last.ckpt`` always ends up holding the final state of training.

    With a periodic interval (``every_n_train_steps``) Lightning writes last.ckpt only at the periodic saves, so a run
    whose ``max_steps`` is not a multiple of the interval would be tested, and resumed, from an older state.
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


class BestValCheckpoint(ModelCheckpoint):
    """Keeps ``best-val-step<N>.ckpt``: the checkpoint of the best ``val/auc_micro`` so far (validation on held-out
    normal videos with injected pseudo-anomalies, no test label), for ``test_checkpoint=best_val``. Its state (best
    path and score) travels in every checkpoint, so a resumed run keeps comparing against the right best."""

    MONITOR = "val/auc_micro"

    def __init__(self, dirpath: str | Path) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="best-val-step{step:07d}",
            monitor=self.MONITOR,
            mode="max",
            save_top_k=1,
            save_last=False,
            auto_insert_metric_name=False,
            save_on_train_epoch_end=False,  # at the end of each validation, where the AUC is known
        )


class SampleGrids(Callback):
    """Every ``every_n_steps`` iterations, draw the method's sample panels (``VADModule.sample_panels``: frames,
    predictions, flows, error maps, ...) of the current training batch.

    The grid (``rows`` samples of the batch, each row titled with its video and frame index) is written to
    ``<run>/samples/step<global_step>.png`` and logged as ``train/samples`` to every tracker that shows images. Runs on
    global rank 0 only, in eval mode without gradients.
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
            grid = panels.render(pl_module.sample_panels(part), part["video"], part["index"], self.rows)
        pl_module.train(was_training)
        path = Path(trainer.default_root_dir) / "samples" / f"step{step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        report.plot_sample_grid(path, grid.rows, row_titles=grid.titles, heatmaps=grid.heatmaps)
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
