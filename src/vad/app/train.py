"""Train a method, test its last checkpoint and write the report.

    python -m vad.train experiment=quickstart
    python -m vad.train model=ffp dataset=ped2 experiment=ffp_ped2
    python -m vad.train -m model.loss.flow=0,1,2

The run folder (Hydra's run directory; ``hydra.run.dir=...`` places it) receives ``.hydra/`` (the resolved
config), ``checkpoints/``, ``scores.csv``, ``metrics.json`` and the plots. A folder that already holds a run is
never written into, except to resume it with ``ckpt_path=last``.

Resuming (``ckpt_path=last`` in the run's folder, or ``ckpt_path=<file>`` into a new one) restores the weights, the
optimiser and scheduler states, buffers (memories), the step and epoch counters and the position in the data order
(``vad.data.datamodule.loaders.ResumableLoader``): on CPU with the same seed a resumed run ends with the weights of an
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

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vad.app.cli import check_fresh, run_directory, run_hydra, show
from vad.errors import ConfigError

# torch, Lightning and the suite's modules that import them are imported inside the functions that use them: the
# command line (--help, a mistyped key) is answered before they load (about 3 s on a 2-core machine).


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


def check_selection(cfg: DictConfig) -> str:
    """``test_checkpoint``, checked before anything is built."""
    choice = cfg.get("test_checkpoint", "last")
    if choice not in TEST_CHECKPOINTS:
        raise ConfigError(f"test_checkpoint={choice} is not one of {list(TEST_CHECKPOINTS)}")
    return choice


def check_validation(choice: str, val_videos: int | float) -> None:
    """``test_checkpoint=best_val`` needs held-out validation videos (``val_videos``: the datamodule's), checked
    before anything is trained."""
    if choice == "best_val" and not val_videos:
        raise ConfigError(
            "test_checkpoint=best_val selects by validation AUC, but there are no validation videos: hold some "
            "normal training videos out with dataset.val_videos=2 (pseudo-anomalies are injected into them)"
        )


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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test the last (or best-validation) checkpoint, write the report; returns the test metrics and
    ``val_auc_micro`` (the tested checkpoint's validation AUC) when there are validation videos."""
    import lightning as L

    from vad.app.build import build_datamodule, build_model, build_trainer, resolve_precision
    from vad.app.stages import finalise_checkpoint, test_and_report, untested_reason, validation_record
    from vad.checkpoint_io import CONFIG_KEY, check_fits
    from vad.distributed import replica_digests
    from vad.evaluation.pixel.evaluation import PixelEvaluation
    from vad.evaluation.pixel.settings import settings_from_config
    from vad.reporting import tracking
    from vad.reporting.machine import run_metadata
    from vad.reporting.summary import format_summary, format_untested

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
    check_validation(choice, datamodule.val_videos)
    if not model.trainable:
        raise ConfigError(f"model={cfg.model._target_} has no weights to train; use `python -m vad.evaluate` instead")
    trainer = build_trainer(cfg, run_dir, val_videos=datamodule.val_videos)
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
                show(format_untested(title, reason, checkpoint=shown))
            return val
        meta = (
            chosen["meta"]
            | run_metadata()
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
        show(format_summary(result, title, checkpoint=shown, pixel=pixel.summary, calibrated=model.test_calibrated))
    return result.to_dict() | val


def main() -> None:
    run_hydra("train", train, resume_key="ckpt_path")


if __name__ == "__main__":
    main()
