"""Lightning callbacks of the suite: checkpoints, training sample grids, and the state a non-finite loss leaves.

    <run>/checkpoints/last.ckpt        RunCheckpoint: the final state of training (and periodic step*.ckpt)
    <run>/samples/step0000500.png      SampleGrids: the method's sample panels of the current batch, every N steps
    <run>/checkpoints/nonfinite_step0000123.ckpt   NonFiniteCheckpoint: the training state at the failing step
    <run>/checkpoints/best-val-step0000400.ckpt    BestValCheckpoint: the best validation micro AUC so far
    checkpoint["state_dict"] / checkpoint["ema"]   WeightEMA: the averaged weights (the detector) / the trained ones

    callbacks = [SampleGrids(every_n_steps=500), NonFiniteCheckpoint("<run>/checkpoints"), WeightEMA(decay=0.999)]

``RunCheckpoint``, ``SampleGrids`` and ``WeightEMA`` (off unless ``callbacks.ema`` is set) are configured in
``conf/callbacks/default.yaml``; ``NonFiniteCheckpoint`` is
part of every training run (``vad.app.build.build_trainer`` adds it), since a diverged run must always leave its state;
``BestValCheckpoint`` of every run with held-out validation videos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from vad.errors import ConfigError
from vad.methods.base import VADModule
from vad.methods.optimisation import NonFiniteLossError
from vad.reporting import panels, plots, tracking


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
        plots.plot_sample_grid(path, grid.rows, row_titles=grid.titles, heatmaps=grid.heatmaps)
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


class WeightEMA(Callback):
    """An exponential moving average of the weights, which is the detector: validation, the test, the calibration,
    ``vad.evaluate``, ``vad.score`` and ``vad.export`` all use the average, while training goes on with the trained
    weights (every method, through any optimiser: the average follows the module, not an optimiser).

    After each iteration (when ``global_step`` has advanced, after the first ``start_step`` iterations) every
    floating-point parameter and buffer ``a`` of the average moves toward the trained value ``w``:
    ``a <- d a + (1 - d) w`` with ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the usual warm-up: the
    first averages follow the fast-changing early weights instead of remembering the initialisation); the first
    update copies the weights and integer buffers are always copied. With ``decay=0.999`` the average spans about
    the last 1000 iterations.

    Checkpoints: ``state_dict`` holds the average (what every reader of a checkpoint loads), ``checkpoint["ema"]`` the
    trained weights, the update count and the settings, from which ``ckpt_path=...`` resumes training so that it
    ends with the weights and average of an uninterrupted run. During a validation in training the average is
    swapped in and out; at the end of training it stays in the module (the trained weights remain in ``ema``).
    Resuming a checkpoint trained without an average starts the average at the resumed weights; the reverse is
    refused (``vad.app.train.read_resume_checkpoint``).
    """

    KEY = "ema"

    def __init__(self, decay: float = 0.999, start_step: int = 0) -> None:
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0.0 < decay < 1.0:
            raise ConfigError(f"callbacks.ema.decay={decay!r}: the average's decay must lie in (0, 1), e.g. 0.999")
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise ConfigError(f"callbacks.ema.start_step={start_step!r} must be an iteration number >= 0")
        self.decay = float(decay)
        self.start_step = start_step
        self.average: dict[str, torch.Tensor] | None = None
        self.updates = 0  # averages taken
        self.step = 0  # the global_step of the last update
        self._trained: dict[str, torch.Tensor] | None = None  # the trained weights while the average is in the module

    @staticmethod
    def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return module.state_dict()  # detached views of the module's own storage: writing into them writes the module

    def _update(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Average the weights of the current ``global_step`` once (after the first ``start_step`` iterations)."""
        step = trainer.global_step
        if step <= self.step or step <= self.start_step or self._trained is not None:
            return
        self.step = step
        current = self._tensors(pl_module)
        if self.average is None:
            self.average = {name: value.detach().clone() for name, value in current.items()}
            self.updates = 1
            return
        keep = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        with torch.no_grad():
            for name, value in current.items():
                average = self.average[name]
                if average.is_floating_point():
                    average.lerp_(value.to(average.dtype), 1.0 - keep)
                else:
                    average.copy_(value)
        self.updates += 1

    def _swap_in(self, pl_module: L.LightningModule) -> None:
        if self.average is None or self._trained is not None:
            return
        current = self._tensors(pl_module)
        self._trained = {name: value.detach().clone() for name, value in current.items()}
        with torch.no_grad():
            for name, value in current.items():
                value.copy_(self.average[name])

    def _swap_out(self, pl_module: L.LightningModule) -> None:
        if self._trained is None:
            return
        with torch.no_grad():
            for name, value in self._tensors(pl_module).items():
                value.copy_(self._trained[name])
        self._trained = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._update(trainer, pl_module)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._swap_in(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._swap_out(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_in(pl_module)  # the detector from now on; the trained weights stay in self._trained

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # A periodic checkpoint holds its iteration's update: Lightning runs the checkpoint callbacks' hooks after
        # every other callback's, so on_train_batch_end above has taken it (tested with the resume).
        if self.average is None:
            return
        trained = self._trained or self._tensors(pl_module)
        checkpoint["state_dict"] = {name: value.detach().clone() for name, value in self.average.items()}
        checkpoint[self.KEY] = {
            "trained_state_dict": {name: value.detach().clone() for name, value in trained.items()},
            "decay": self.decay,
            "start_step": self.start_step,
            "updates": self.updates,
            "step": self.step,
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Only a resumed fit needs the trained weights back; a test of the checkpoint uses its average.
        state = checkpoint.get(self.KEY)
        if trainer.state.fn != TrainerFn.FITTING or state is None:
            return
        pl_module.load_state_dict(state["trained_state_dict"])
        device = pl_module.device
        self.average = {name: value.detach().to(device, copy=True) for name, value in checkpoint["state_dict"].items()}
        self.updates = int(state["updates"])
        self.step = int(state["step"])
        self._trained = None
