"""The stages of a run after its model is built: what training leaves in its last checkpoint, the checkpoint to test,
and the test with its report.

    finalised = finalise_checkpoint(trainer, model, datamodule, run_dir)   # training means, calibration
    chosen = validation_record(trainer, model, datamodule, run_dir, "best_val")
    result = test_and_report(trainer, model, datamodule, run_dir, ckpt_path=chosen["ckpt"], ...)

``vad.train`` runs all three, ``vad.evaluate`` the test. The report goes to the run folder and to every tracker of the
trainer (``vad.reporting.tracking``).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

from vad.app.callbacks import BestValCheckpoint
from vad.checkpoint_io import AtomicCheckpointIO
from vad.evaluation.calibration import CHECKPOINT_KEY as CALIBRATION_KEY
from vad.evaluation.pixel.evaluation import PixelEvaluation
from vad.io import atomic_path
from vad.methods.base import VADModule
from vad.reporting import tracking
from vad.reporting.files import write_report
from vad.reporting.panels import render

BEST_VAL = "best_val (best validation micro AUC on pseudo-anomalies in held-out training videos; no test label)"


def finalise_checkpoint(trainer: L.Trainer, model: Any, datamodule: Any, run_dir: Path) -> dict[str, Any]:
    """What is computed once with the final weights and written into the run's last checkpoint, so a later
    ``vad.evaluate`` / ``vad.score`` of it works exactly like this run's test: the training means of a method that
    declares ``training_mean_names`` (AMC's score weights), then the calibration of the scores on held-out normal
    frames (``vad.evaluation.calibration``, for streams and alerts). Nothing else in the checkpoint changes (the loop
    and optimiser states of the last step stay as saved). Both run in the trainer's precision. Returns what
    metrics.json records."""
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


def validation_record(trainer: L.Trainer, model: Any, datamodule: Any, run_dir: Path, choice: str) -> dict[str, Any]:
    """The checkpoint to test and what metrics.json records about validation: the plan of the injected
    pseudo-anomalies (written to ``val_pseudo.json``), the final weights' validation AUCs and, for ``best_val``,
    the selected checkpoint and its validation AUC."""
    plan = getattr(datamodule, "validation_plan", None)
    last = run_dir / "checkpoints" / "last.ckpt"
    record: dict[str, Any] = {"ckpt": str(last) if last.is_file() else None, "selection": "last", "meta": {}}
    if plan is None:
        return record
    if trainer.is_global_zero:
        with atomic_path(run_dir / "val_pseudo.json") as tmp:
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


def test_and_report(
    trainer: L.Trainer,
    model: VADModule,
    datamodule: Any,
    run_dir: Path,
    *,
    ckpt_path: str | None,
    selection: str,
    meta: dict[str, Any],
    pixel: PixelEvaluation | None,
) -> Any:
    """Test ``model`` (weights of ``ckpt_path`` when given), write the report into ``run_dir`` and publish it to the
    trainer's trackers (rank 0). ``meta`` is recorded in metrics.json with the checkpoint, the world size and the
    tracker runs, and the test's wall time (``test_seconds``). With ``pixel`` the test also measures the pixel-level
    metrics (``vad.evaluation.pixel.evaluation``), recorded as ``pixel`` (null when not computed, ``pixel_reason``
    saying why)."""
    start = time.perf_counter()
    model.begin_test(pixel=pixel)
    try:
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    finally:
        model.end_test()
        if pixel is not None:
            pixel.cleanup()
    seconds = time.perf_counter() - start
    result = model.test_result
    if trainer.is_global_zero and result is not None:
        meta = dict(meta)
        meta.update({"checkpoint": ckpt_path, "checkpoint_selection": selection, "world_size": trainer.world_size})
        meta["precision"] = str(trainer.precision)  # the test's arithmetic (bf16-mixed: bfloat16 autocast)
        meta.setdefault("selected_on_test_labels", selection.startswith("best_on_test"))
        tracking.publish_selection(
            trainer.loggers,
            {k: meta.get(k) for k in ("checkpoint_selection", "selected_on_test_labels", "val_auc_micro")},
        )
        meta["test_seconds"] = round(seconds, 3)
        if pixel is not None:
            meta["pixel"] = pixel.block
            if pixel.block is None:
                meta["pixel_reason"] = pixel.reason
        if model.test_calibrated is not None:
            meta["calibrated"] = model.test_calibrated
        meta.update(tracking.describe(trainer.loggers))
        full_labels = {v.name: v.labels for v in datamodule.test_videos if v.labels is not None}
        samples = None if model.test_samples is None else render(*model.test_samples)
        paths = write_report(run_dir, result, meta, full_labels, samples=samples)
        tracking.publish_report(trainer.loggers, result, paths, step=trainer.global_step)
    return result
