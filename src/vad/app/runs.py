"""Read finished runs and sweeps back from their folders: metrics, per-frame scores, overrides, failures.

    logs/train/multiruns/<time>/              a sweep (hydra.sweep.dir)
      multirun.yaml  sweep_summary.md  sweep_summary.csv
      0/  .hydra/{config,overrides}.yaml  metrics.json  scores.csv  *.png  checkpoints/     one job (a run folder)
      1/  .hydra/...  error.txt                                                           a job that failed

    run = load_run("logs/train/runs/<time>")         # run.metrics["auc_micro"], run.scores()["score"]
    print(format_comparison(summary_rows(load_sweep("logs/train/multiruns/<time>"))))

The notebooks and the sweep summary (:class:`vad.app.sweep.SweepSummary`) read runs only through this module.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vad.io import atomic_path
from vad.reporting.summary import format_comparison

#: key of a failed multirun job's return value, and the file in its folder holding the error
FAILED = "failed"
FAILURE_FILE = "error.txt"
#: the metrics a summary shows by default
SUMMARY_METRICS = ("val_auc_micro", "auc_micro", "auc_macro", "eer", "ap", "auc_micro_raw", "frames")
#: written into a sweep folder by a search whose objective was a test metric (vad_optuna_sweeper)
TEST_SELECTED_MARK = "SELECTED_ON_TEST_LABELS"


def record_failure(run_dir: Path, message: str) -> Path:
    """Write a failed job's one-line error into ``<run_dir>/error.txt``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / FAILURE_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(message.strip() + "\n")
    return path


@dataclass
class Run:
    """One run folder: ``metrics`` (metrics.json, None until the run finished), ``overrides`` (the job's command-line
    overrides), ``error`` (the first line of error.txt for a failed job)."""

    path: Path
    metrics: dict[str, Any] | None
    overrides: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def status(self) -> str:
        """``completed`` (metrics.json written), ``failed`` (error.txt written) or ``unfinished``."""
        if self.metrics is not None:
            return "completed"
        return "failed" if self.error is not None else "unfinished"

    @property
    def name(self) -> str:
        return self.path.name

    def config(self) -> DictConfig:
        """The resolved config the run was composed with (``.hydra/config.yaml``)."""
        return OmegaConf.load(self.path / ".hydra" / "config.yaml")  # type: ignore[return-value]

    def scores(self) -> dict[str, np.ndarray]:
        """The columns of scores.csv: ``video`` (str), ``frame`` (int), ``label`` (float, NaN when unlabelled),
        ``score`` and one float column per signal, one row per scored frame."""
        with open(self.path / "scores.csv", newline="") as f:
            rows = list(csv.reader(f))
        header, body = rows[0], rows[1:]
        columns = {name: [r[i] for r in body] for i, name in enumerate(header)}
        out: dict[str, np.ndarray] = {"video": np.array(columns.pop("video"), dtype=str)}
        out["frame"] = np.array(columns.pop("frame"), dtype=np.int64)
        out["label"] = np.array([float(x) if x != "" else np.nan for x in columns.pop("label")])
        out.update({name: np.array(values, dtype=np.float64) for name, values in columns.items()})
        return out


def load_run(path: str | Path) -> Run:
    """The run in folder ``path`` (finished, failed or still running)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run folder")
    metrics_file = path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.is_file() else []
    failure = path / FAILURE_FILE
    error = failure.read_text().splitlines()[0] if failure.is_file() else None
    return Run(path, metrics, overrides, error)


def _job_number(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if re.fullmatch(r"\d+", path.name) else (1 << 30, path.name)


def load_sweep(path: str | Path) -> list[Run]:
    """The jobs of a sweep folder (its sub-folders holding ``.hydra/``), in job order."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such sweep folder")
    jobs = sorted((p for p in path.iterdir() if (p / ".hydra").is_dir()), key=_job_number)
    return [load_run(p) for p in jobs]


def varying_overrides(runs: Sequence[Run]) -> list[str]:
    """The override keys whose value differs between the runs (what a sweep varied), in first-seen order."""
    values: dict[str, list[str | None]] = {}
    for run in runs:
        given = dict(o.partition("=")[::2] for o in run.overrides)
        for key in given:
            values.setdefault(key, [])
        for key, seen in values.items():
            seen.append(given.get(key))
    return [key for key, seen in values.items() if len(set(seen)) > 1 or len(seen) < len(runs)]


def summary_rows(runs: Sequence[Run], metrics: Sequence[str] = SUMMARY_METRICS) -> list[dict[str, Any]]:
    """One row per run: ``job``, the varied overrides, ``status``, the ``metrics`` and the error of a failed job."""
    varied = varying_overrides(runs)
    rows = []
    for run in runs:
        given = dict(o.partition("=")[::2] for o in run.overrides)
        row: dict[str, Any] = {"job": run.name}
        row.update({key: given.get(key, "") for key in varied})
        row["status"] = run.status
        row.update({m: (run.metrics or {}).get(m) for m in metrics})
        row["error"] = run.error or ""
        rows.append(row)
    return rows


def write_summary(sweep_dir: str | Path, metrics: Sequence[str] = SUMMARY_METRICS) -> tuple[Path, list[Run]]:
    """Write ``sweep_summary.md`` (a Markdown table) and ``sweep_summary.csv`` of every job of a sweep folder;
    returns the Markdown file and the runs."""
    sweep_dir = Path(sweep_dir)
    runs = load_sweep(sweep_dir)
    rows = summary_rows(runs, metrics)
    table = format_comparison(rows) if rows else "(no jobs)"
    done = sum(r.status == "completed" for r in runs)
    choose = (
        "Choose a job by val_auc_micro (validation AUC on pseudo-anomalies in held-out training videos); choosing "
        "by a test column (auc_micro, auc_macro, ...) is selection on the test labels and must be reported as such."
    )
    mark = sweep_dir / TEST_SELECTED_MARK
    if mark.is_file():
        choose = f"**{mark.read_text().strip()}.** " + choose
    text = f"# Sweep {sweep_dir}\n\n{done} of {len(runs)} jobs completed.\n\n{choose}\n\n{table}\n"
    markdown = sweep_dir / "sweep_summary.md"
    with atomic_path(markdown) as tmp:
        tmp.write_text(text)
    with atomic_path(sweep_dir / "sweep_summary.csv") as tmp, open(tmp, "x", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["job"])
        writer.writeheader()
        writer.writerows(rows)
    return markdown, runs
