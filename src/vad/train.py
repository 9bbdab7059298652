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
uninterrupted one. A non-finite loss stops training with the step and term, after saving the state of that step
(``vad.callbacks.NonFiniteCheckpoint``). Under DDP the replicas' weights are compared after fitting.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vad import report, tracking
from vad.build import build_datamodule, build_model, build_trainer, test_and_report
from vad.cli import check_fresh, run_hydra
from vad.distributed import replica_digests
from vad.errors import ConfigError


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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test the last checkpoint, write the report; returns the test metrics."""
    run_dir = run_directory()
    resume = resolve_resume(cfg.get("ckpt_path"), run_dir)
    check_fresh(run_dir, resuming=resume is not None)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
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
        if not cfg.get("test", True):
            return {}
        last = run_dir / "checkpoints" / "last.ckpt"
        ckpt = str(last) if last.is_file() else None
        meta = report.run_metadata() | {
            "seed": cfg.seed,
            "run_dir": str(run_dir),
            "task": "train",
            "resumed_from": resume,
            "replica_digests": digests,
            "train_seconds": round(fit_seconds, 3),  # this process's fit (a resumed run: since the resume)
            "train_steps": trainer.global_step,
        }
        result = test_and_report(trainer, model, datamodule, run_dir, ckpt_path=ckpt, selection="last", meta=meta)
    if result is None:
        return {}
    if trainer.is_global_zero:
        title = f"{cfg.model._target_.rsplit('.', 1)[-1]} on {cfg.dataset.name}"
        print(report.format_summary(result, title=title, checkpoint=f"{ckpt or 'in-memory weights'} (last)"))
    return result.to_dict()


def main() -> None:
    run_hydra("train", train, resume_key="ckpt_path")


if __name__ == "__main__":
    main()
