"""Train a method, test its last checkpoint and write the report.

    python -m vad.train experiment=quickstart
    python -m vad.train model=ffp dataset=ped2 experiment=ffp_ped2
    python -m vad.train -m model.loss.flow=0,1,2

The run folder (Hydra's run directory; ``hydra.run.dir=...`` places it) receives ``.hydra/`` (the resolved
config), ``checkpoints/``, ``scores.csv``, ``metrics.json`` and the plots. A folder that already holds a run is
never written into, except to resume it with ``ckpt_path=last``.

Resuming (``ckpt_path=last`` in the run's folder, or ``ckpt_path=<file>`` into a new one) restores the weights, the
optimiser and scheduler states, buffers (memories), the step and epoch counters and the position in the data order
(``vad.data.datamodule.ResumableLoader``): on CPU with the same seed a resumed run ends with the weights of an
uninterrupted one. With held-out videos (``dataset.val_videos=2``) every validation epoch logs ``val/auc_micro`` on
injected pseudo-anomalies, ``test_checkpoint=best_val`` tests the checkpoint that maximised it, and metrics.json
records the tested checkpoint's validation AUC (``val_auc_micro``) and the plan of the injection
(``val_pseudo.json``). A non-finite loss stops training with the step and term, after saving the state of that step
(``vad.app.callbacks.NonFiniteCheckpoint``). Under DDP the replicas' weights are compared after fitting.

A ``ckpt_path`` that is not a checkpoint of this suite, or whose weights do not fit the configured model, is refused
in one line before any data is read (``vad.checkpoint_io.read_checkpoint`` / ``check_fits``). Footage without a test
split (a folder of videos or frame folders) trains as usual; with ``test=true`` the run then says that nothing was
tested, why, and where the checkpoint is. A test split without labels is scored (scores.csv) and the summary says
that there is no AUC.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vad.app.cli import check_fresh, run_hydra, show
from vad.errors import ConfigError

if TYPE_CHECKING:
    import lightning as L

# torch, Lightning and the suite's modules that import them are imported inside the functions that use them: the
# command line (--help, a mistyped key) is answered before they load (about 3 s on a 2-core machine).


def run_directory() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def resolve_resume(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``last`` -> the run folder's last.ckpt; a path is checked for existence."""
    if ckpt_path is None:
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        hint = " (ckpt_path=last resumes the run in hydra.run.dir=<run folder>)" if ckpt_path == "last" else ""
        raise ConfigError(f"ckpt_path: checkpoint {path} not found{hint}")
    return str(path)


TEST_CHECKPOINTS = ("last", "best_val")
BEST_VAL = "best_val (best validation micro AUC on pseudo-anomalies in held-out training videos; no test label)"


def check_selection(cfg: DictConfig) -> str:
    """``test_checkpoint``, checked before anything is trained."""
    choice = cfg.get("test_checkpoint", "last")
    if choice not in TEST_CHECKPOINTS:
        raise ConfigError(f"test_checkpoint={choice} is not one of {list(TEST_CHECKPOINTS)}")
    if choice == "best_val" and not cfg.dataset.get("val_videos"):
        raise ConfigError(
            "test_checkpoint=best_val selects by validation AUC, but there are no validation videos: hold some "
            "normal training videos out with dataset.val_videos=2 (pseudo-anomalies are injected into them)"
        )
    return choice


def validation_record(trainer: L.Trainer, model: Any, datamodule: Any, run_dir: Path, choice: str) -> dict[str, Any]:
    """The checkpoint to test and what metrics.json records about validation: the plan of the injected
    pseudo-anomalies (written to ``val_pseudo.json``), the final weights' validation AUCs and, for ``best_val``,
    the selected checkpoint and its validation AUC."""
    from vad.app.callbacks import BestValCheckpoint
    from vad.reporting import report

    plan = getattr(datamodule, "validation_plan", None)
    last = run_dir / "checkpoints" / "last.ckpt"
    record: dict[str, Any] = {"ckpt": str(last) if last.is_file() else None, "selection": "last", "meta": {}}
    if plan is None:
        return record
    if trainer.is_global_zero:
        with report.atomic_path(run_dir / "val_pseudo.json") as tmp:
            tmp.write_text(json.dumps(plan, indent=2) + "\n")
    trainer.validate(model, datamodule=datamodule, verbose=False)  # the final weights, whatever the schedule
    final = model.val_result
    meta = record["meta"]
    meta["val_plan"] = str(run_dir / "val_pseudo.json")
    meta["val_auc_micro_final"] = None if final is None else final.auc_micro
    meta["val_auc_macro_final"] = None if final is None else final.auc_macro
    meta["val_auc_micro"] = meta["val_auc_micro_final"]
    if choice == "best_val":
        # the best of the validation epochs during training and of the final weights (validated above)
        best = next((c for c in trainer.callbacks if isinstance(c, BestValCheckpoint)), None)  # type: ignore[attr-defined]
        candidates = []
        if best is not None and best.best_model_path and best.best_model_score is not None:
            candidates.append((float(best.best_model_score), best.best_model_path))
        if final is not None and not math.isnan(final.auc_micro) and last.is_file():
            candidates.append((final.auc_micro, str(last)))
        if not candidates:
            warnings.warn(
                "test_checkpoint=best_val: no validation AUC was computed, so the last checkpoint is tested",
                stacklevel=2,
            )
            record["selection"] = "last (best_val requested, but no validation AUC was computed)"
        else:
            score, path = max(candidates, key=lambda c: c[0])  # the earlier checkpoint wins a tie
            record["ckpt"] = path
            record["selection"] = BEST_VAL
            meta["val_auc_micro"] = score
    return record


def finalise_checkpoint(trainer: L.Trainer, model: Any, datamodule: Any, run_dir: Path) -> dict[str, Any]:
    """What is computed once with the final weights and written into the run's last checkpoint, so a later
    ``vad.evaluate`` / ``vad.score`` of it works exactly like this run's test: the training means of a method that
    declares ``training_mean_names`` (AMC's score weights), then the calibration of the scores on held-out normal
    frames (``vad.evaluation.calibration``, for streams and alerts). Nothing else in the checkpoint changes (the loop and
    optimiser states of the last step stay as saved). Both run in the trainer's precision. Returns what
    metrics.json records."""
    import torch

    from vad.checkpoint_io import AtomicCheckpointIO
    from vad.evaluation.calibration import CHECKPOINT_KEY as CALIBRATION_KEY

    record: dict[str, Any] = {}
    # in the trainer's precision (bf16-mixed: bfloat16 autocast), in which the test runs and the detector is scored
    with trainer.precision_plugin.forward_context():
        if model.training_mean_names:
            record["training_means"] = model.compute_training_means(datamodule.training_frames_dataloader())
        loader, source = datamodule.calibration_dataloader()
        calibration = model.calibrate(loader, source)
    record["calibration"] = {"source": calibration.source, "frames": calibration.frames}
    last = run_dir / "checkpoints" / "last.ckpt"
    if trainer.is_global_zero and last.is_file():
        checkpoint = torch.load(last, map_location="cpu", weights_only=False)
        if model.training_mean_names:
            checkpoint["state_dict"]["training_means"] = model.training_means.detach().cpu().clone()
        checkpoint[CALIBRATION_KEY] = calibration.to_dict()
        AtomicCheckpointIO().save_checkpoint(checkpoint, last)
    trainer.strategy.barrier("finalise_checkpoint")
    return record


def read_resume_checkpoint(path: str, cfg: DictConfig) -> dict[str, Any]:
    """The checkpoint to resume from, checked: a checkpoint of this suite (:func:`read_checkpoint`) that holds a
    training state (optimiser states and loop counters), not only weights; one trained with a weight average
    (:class:`~vad.app.callbacks.WeightEMA`) resumes only with one, since its ``state_dict`` is the average, not the
    weights that were being trained."""
    from vad.app.callbacks import WeightEMA
    from vad.checkpoint_io import read_checkpoint

    checkpoint = read_checkpoint(path)
    if "optimizer_states" not in checkpoint or "loops" not in checkpoint:
        raise ConfigError(
            f"ckpt_path: {path} holds weights but no training state to resume from (optimiser states, loop "
            f"counters); test it with python -m vad.evaluate ckpt_path={path}"
        )
    if WeightEMA.KEY in checkpoint and (cfg.get("callbacks") or {}).get("ema") is None:
        decay = checkpoint[WeightEMA.KEY].get("decay")
        raise ConfigError(
            f"ckpt_path: {path} was trained with a weight average (callbacks.ema, decay {decay}); resume it with "
            f"the same callbacks.ema='{{_target_: vad.app.callbacks.WeightEMA, decay: {decay}}}'"
        )
    return checkpoint


def untested_reason(datamodule: Any, ckpt: str | None) -> str | None:
    """Why the test split cannot be tested (None when it can): footage without test videos."""
    index = getattr(datamodule, "index", None)
    if index is None or index.test:
        return None
    command = f"python -m vad.evaluate ckpt_path={ckpt or '<checkpoint>'} dataset.root=<footage>"
    return (
        f"{index.root} has no test videos (no testing/ split: every video there is training footage); "
        f"to score footage: {command}"
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test the last (or best-validation) checkpoint, write the report; returns the test metrics and
    ``val_auc_micro`` (the tested checkpoint's validation AUC) when there are validation videos."""
    import lightning as L

    from vad.app.build import build_datamodule, build_model, build_trainer, resolve_precision, test_and_report
    from vad.checkpoint_io import check_fits
    from vad.distributed import replica_digests
    from vad.evaluation.pixel.evaluation import PixelEvaluation, settings_from_config
    from vad.methods.base import CONFIG_KEY
    from vad.reporting import report, tracking

    run_dir = run_directory()
    resume = resolve_resume(cfg.get("ckpt_path"), run_dir)
    resume_checkpoint = read_resume_checkpoint(resume, cfg) if resume is not None else None
    choice = check_selection(cfg)
    pixel = PixelEvaluation(settings_from_config(cfg), run_dir)  # checked before anything is trained
    check_fresh(run_dir, resuming=resume is not None)
    started = (resume_checkpoint or {}).get(CONFIG_KEY, {}).get("config")
    precision_choice = resolve_precision(cfg, started)  # before the model records its run config
    L.seed_everything(cfg.seed, workers=True)
    model = build_model(cfg)
    if resume is not None and resume_checkpoint is not None:
        check_fits(model, resume_checkpoint, resume)
    del resume_checkpoint  # memory-mapped: Lightning reads the file again to resume
    datamodule = build_datamodule(cfg, model)
    if not model.trainable:
        raise ConfigError(f"model={cfg.model._target_} has no weights to train; use `python -m vad.evaluate` instead")
    trainer = build_trainer(cfg, run_dir)
    with tracking.finishing(trainer.loggers):
        start = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
        fit_seconds = time.perf_counter() - start
        digests = replica_digests(model)
        if len(set(digests)) > 1:
            raise RuntimeError(f"the DDP replicas' weights differ after training (digest per rank: {digests})")
        finalised = finalise_checkpoint(trainer, model, datamodule, run_dir)
        chosen = validation_record(trainer, model, datamodule, run_dir, choice)
        val = {k: v for k, v in chosen["meta"].items() if k.startswith("val_auc")}
        if not cfg.get("test", True):
            return val
        ckpt = chosen["ckpt"]
        title = f"{cfg.model._target_.rsplit('.', 1)[-1]} on {cfg.dataset.name}"
        reason = untested_reason(datamodule, ckpt)
        if reason is not None:
            if trainer.is_global_zero:
                shown = f"{ckpt} ({chosen['selection']})" if ckpt else "none written (in-memory weights only)"
                show(report.format_untested(title, reason, checkpoint=shown))
            return val
        meta = (
            chosen["meta"]
            | report.run_metadata()
            | {
                "seed": cfg.seed,
                "run_dir": str(run_dir),
                "task": "train",
                "resumed_from": resume,
                "replica_digests": digests,
                "train_seconds": round(fit_seconds, 3),  # this process's fit (a resumed run: since the resume)
                "train_steps": trainer.global_step,
                "precision_choice": precision_choice,  # how trainer.precision=auto was resolved (None: as given)
            }
            | finalised
        )
        selection = chosen["selection"]
        result = test_and_report(
            trainer, model, datamodule, run_dir, ckpt_path=ckpt, selection=selection, meta=meta, pixel=pixel
        )
    if result is None:
        return val
    if trainer.is_global_zero:
        shown = f"{ckpt or 'in-memory weights'} ({selection})"
        if "val_auc_micro" in val and val["val_auc_micro"] is not None:
            shown += f"; validation micro AUC {val['val_auc_micro']:.4f}"
        show(
            report.format_summary(
                result, title, checkpoint=shown, pixel=pixel.summary, calibrated=model.test_calibrated
            )
        )
    return result.to_dict() | val


def main() -> None:
    run_hydra("train", train, resume_key="ckpt_path")


if __name__ == "__main__":
    main()
