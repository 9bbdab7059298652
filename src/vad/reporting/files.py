"""The run's result files: per-frame scores (``scores.csv``), the metrics with their protocol (``metrics.json``) and
the whole report (:func:`write_report`: those two and the plots of :mod:`vad.reporting.plots`).

    <run_dir>/                 (the caller's folder, e.g. Hydra's run directory)
      scores.csv               video, frame, label, score, <one column per signal, raw values>
      metrics.json             micro/macro AUC, EER, AP, raw AUC, per-video AUCs, counts, protocol + run metadata
                               (with pixel masks, the pixel-level metrics under "pixel": see
                               vad.evaluation.pixel.evaluation)
      score_curves.png         per-video anomaly score, ground-truth anomalous ranges shaded
      roc.png                  the micro ROC curve
      samples.png              the method's sample panels (frames, predictions, flows, error maps), when given

    paths = write_report(run_dir, result, run_metadata() | {"checkpoint_selection": "last"}, full_labels)
    signals = read_scores_csv(run_dir / "scores.csv")

Every file is written atomically (:func:`vad.io.atomic_path`), so a reader or a crash never sees a half-written one.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from vad.evaluation.protocol import ProtocolResult
from vad.evaluation.records import VideoSignals, group_columns
from vad.io import atomic_path
from vad.reporting.panels import SampleGrid
from vad.reporting.plots import plot_roc, plot_sample_grid, plot_score_curves


def _number(x: float) -> str:
    """Shortest text that reads back as the same float."""
    return repr(float(x))


def write_scores_csv(path: Path, result: ProtocolResult) -> Path:
    """One row per evaluated frame: ``video, frame, label, score, <signals...>`` (frame = 0-based position,
    label empty when unlabelled, score = the fused anomaly score, signals = raw values)."""
    with atomic_path(path) as tmp, open(tmp, "x", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "frame", "label", "score", *result.signal_names])
        for v in result.videos:
            signals = [v.signals[k] for k in result.signal_names]
            for i, frame in enumerate(v.frames):
                label = "" if v.labels is None else int(v.labels[i])
                writer.writerow([v.name, int(frame), label, _number(v.score[i]), *(_number(s[i]) for s in signals)])
    return Path(path)


def read_scores_csv(path: Path) -> list[VideoSignals]:
    """The per-video raw signals of a ``scores.csv`` (:func:`write_scores_csv`), ready for
    :func:`vad.evaluation.protocol.evaluate` under another score, normalisation or smoothing: frames, labels (None
    when the file has none) and every signal column, float64; the written fused ``score`` is left out."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no scored frame")
    signals = [k for k in rows[0] if k not in ("video", "frame", "label", "score")]
    labelled = rows[0]["label"] != ""
    return group_columns(
        [r["video"] for r in rows],
        [int(r["frame"]) for r in rows],
        {k: [float(r[k]) for r in rows] for k in signals},
        labels=[int(r["label"]) for r in rows] if labelled else None,
        video_order=list(dict.fromkeys(r["video"] for r in rows)),
    )


def _jsonable(value: object, key: str = "meta") -> object:
    """Plain JSON values: NaN/inf -> None, numpy -> Python, paths -> str; anything else unknown raises TypeError."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), key)
    if isinstance(value, np.generic):
        return _jsonable(value.item(), key)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Sequence):
        return [_jsonable(v, f"{key}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{key}: {type(value).__name__} cannot be written to metrics.json; pass a str, number or list")


def write_metrics_json(path: Path, result: ProtocolResult, meta: Mapping[str, object]) -> Path:
    """The result's metrics, counts and protocol (:meth:`ProtocolResult.to_dict`) plus every key of ``meta``
    (checkpoint and how it was selected, seed, versions, git commit, ...) at the top level; NaN is written as null."""
    doc = result.to_dict()
    clash = sorted(set(doc) & set(meta))
    if clash:
        raise ValueError(f"meta keys {clash} collide with metric names in metrics.json; rename them")
    doc.update(_jsonable(meta))
    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    with atomic_path(path) as tmp, open(tmp, "x") as f:
        f.write(text)
    return Path(path)


def write_report(
    run_dir: Path,
    result: ProtocolResult,
    meta: Mapping[str, object],
    full_labels: Mapping[str, np.ndarray] | None,
    samples: SampleGrid | None = None,
) -> dict[str, Path]:
    """Write scores.csv, metrics.json, score_curves.png, roc.png and (with ``samples``, the rendered sample panels of
    the test) samples.png into ``run_dir``; returns name -> path (``scores``, ``metrics``, ``score_curves``, ``roc``,
    ``samples``)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "scores": write_scores_csv(run_dir / "scores.csv", result),
        "metrics": write_metrics_json(run_dir / "metrics.json", result, meta),
        "score_curves": plot_score_curves(run_dir / "score_curves.png", result, full_labels),
        "roc": plot_roc(run_dir / "roc.png", result),
    }
    if samples:
        paths["samples"] = plot_sample_grid(
            run_dir / "samples.png", samples.rows, row_titles=samples.titles, heatmaps=samples.heatmaps
        )
    return paths
