"""Write a run's results into its folder: per-frame scores, metrics with their protocol, plots, a printed summary.

    <run_dir>/                 (the caller's folder, e.g. Hydra's run directory)
      scores.csv               video, frame, label, score, <one column per signal, raw values>
      metrics.json             micro/macro AUC, EER, AP, raw AUC, per-video AUCs, counts, protocol + run metadata
                               (with pixel masks, the pixel-level metrics under "pixel": see vad.evaluation.pixel.evaluation)
      score_curves.png         per-video anomaly score, ground-truth anomalous ranges shaded
      roc.png                  the micro ROC curve
      samples.png              the method's sample panels (frames, predictions, flows, error maps), when given

    paths = write_report(run_dir, result, run_metadata() | {"checkpoint_selection": "last"}, full_labels)
    print(format_summary(result, "ffp on ped2"))

Every file is written to a temporary name in the same folder and moved into place with ``os.replace``, so a reader
or a crash never sees a half-written file; an existing file is replaced (and the replacement logged) only that way.
Plots use matplotlib's Agg canvas directly and never touch pyplot's global state.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import logging
import math
import os
import platform
import subprocess
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

import vad
from vad.evaluation.protocol import ProtocolResult, VideoSignals, group_columns
from vad.precision import cpu_bf16_units
from vad.reporting.panels import SampleGrid

log = logging.getLogger(__name__)

_PANEL_INCHES = (4.0, 2.2)  # one score-curve subplot
_SAMPLE_INCHES = 2.5  # one sample-grid cell
_DPI = 100


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; on success move it onto ``path``, on failure delete it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        if path.exists():
            log.info("replacing %s", path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return Path(path)


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
    :func:`vad.evaluation.protocol.evaluate` under another score, normalisation or smoothing: frames, labels (None when the
    file has none) and every signal column, float64; the written fused ``score`` is left out."""
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


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _cpuinfo(key: str) -> str | None:
    """The value of the first ``key`` line of /proc/cpuinfo (None where there is none: not Linux, or no such key)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_description() -> str:
    """One line for a benchmark's header: the CPU model and its bfloat16 units."""
    return f"{_cpu_model()} (bf16 units: {', '.join(cpu_bf16_units()) or 'none'})"


def machine() -> dict[str, object]:
    """What ran the job: CPU model and its bfloat16 units, logical cores, torch's intra-op threads, and the CUDA devices
    (name) if any."""
    import torch

    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    return {
        "cpu": _cpu_model(),
        "cpu_bf16": cpu_bf16_units(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus,
        "platform": platform.platform(),
    }


def run_metadata() -> dict[str, object]:
    """Versions (python, torch, lightning, vad, numpy, scikit-learn), the vad checkout's git commit and whether it had
    uncommitted changes (None when vad is not run from a git checkout), the machine (:func:`machine`) and the UTC
    time."""
    root = Path(vad.__file__).resolve().parents[2]
    top = _git(root, "rev-parse", "--show-toplevel")
    in_checkout = top is not None and Path(top).resolve() == root
    commit = _git(root, "rev-parse", "HEAD") if in_checkout else None
    # --no-optional-locks: a status check must not rewrite the index of a checkout others may be using.
    status = _git(root, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "versions": {
            "python": platform.python_version(),
            "torch": _package_version("torch"),
            "lightning": _package_version("lightning"),
            "vad": vad.__version__,
            "numpy": np.__version__,
            "scikit-learn": _package_version("scikit-learn"),
        },
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "machine": machine(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _ranges(frames: np.ndarray, labels: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) frame ranges of consecutive anomalous frames."""
    pos = frames[labels.astype(bool)]
    if pos.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(pos) != 1)
    starts = np.concatenate([[pos[0]], pos[breaks + 1]])
    ends = np.concatenate([pos[breaks], [pos[-1]]])
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def plot_score_curves(path: Path, result: ProtocolResult, full_labels: Mapping[str, np.ndarray] | None) -> Path:
    """A grid with one subplot per video: fused score against frame, ground-truth anomalous ranges shaded.

    ``full_labels``: video name -> (num_frames,) 0/1 labels of every frame, so that ranges in dropped frames show
    too; without it (or for a video it lacks) the evaluated frames' labels are shaded.
    """
    n = max(len(result.videos), 1)
    ncols = min(n, 4 if n <= 16 else 6)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(ncols * _PANEL_INCHES[0], nrows * _PANEL_INCHES[1]), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(result.videos) :]:
        ax.set_axis_off()
    if not result.videos:
        axes[0].text(0.5, 0.5, "no scored frames", ha="center", va="center", transform=axes[0].transAxes)
    for ax, v in zip(axes, result.videos, strict=False):
        full = None if full_labels is None else full_labels.get(v.name)
        if full is not None:
            spans = _ranges(np.arange(len(full)), np.asarray(full))
            ax.set_xlim(-0.5, len(full) - 0.5)
        else:
            spans = [] if v.labels is None else _ranges(v.frames, v.labels)
        for first, last in spans:
            ax.axvspan(first - 0.5, last + 0.5, color="tab:red", alpha=0.2, linewidth=0)
        ax.plot(v.frames, v.score, color="tab:blue", linewidth=1)
        if result.normalise and result.normalisation == "minmax":  # division by the max is not bounded to [0, 1]
            ax.set_ylim(-0.03, 1.03)
        auc = "single class" if v.auc is None else f"AUC {v.auc:.3f}"
        ax.set_title(f"{v.name}  ({auc})" if v.labels is not None else v.name, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle("anomaly score per frame (higher = more anomalous); red: ground-truth anomalous", fontsize=10)
    return _save(fig, path)


def plot_roc(path: Path, result: ProtocolResult) -> Path:
    """The micro ROC curve with its AUC and the equal-error point."""
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    if result.roc_fpr.size:
        ax.plot(result.roc_fpr, result.roc_tpr, color="tab:blue", linewidth=1.5)
        ax.plot([result.eer], [1 - result.eer], "o", color="tab:red", label=f"EER {result.eer:.4f}")
        ax.legend(loc="lower right")
        ax.set_title(f"micro ROC, AUC {result.auc_micro:.4f}")
    else:
        ax.set_title("ROC undefined (no labels or a single class)")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate", aspect="equal")
    return _save(fig, path)


def _panel(image: np.ndarray, heatmap: bool, what: str) -> np.ndarray:
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"{what}: expected an (H, W), (H, W, 1) or (H, W, 3) array, got shape {arr.shape}")
    if heatmap:
        if arr.ndim == 3:
            arr = arr.mean(axis=2)
        if (arr < 0).any():
            raise ValueError(f"{what}: an error heat map must be >= 0, found {arr.min()}")
        return arr
    return np.clip((arr + 1.0) / 2.0, 0.0, 1.0)


def plot_sample_grid(
    path: Path,
    rows: Sequence[Mapping[str, np.ndarray]],
    *,
    row_titles: Sequence[str] | None = None,
    heatmaps: Collection[str] = ("error",),
) -> Path:
    """A grid of sample images, one row per sample, one column per key of the row's name -> image mapping (the
    rows of a ``vad.reporting.panels.SampleGrid``).

    Images are (H, W), (H, W, 1) or (H, W, 3) RGB in [-1, 1]; columns named in ``heatmaps`` are error maps >= 0,
    drawn with a colour map scaled to their own maximum. Every row must have the same columns. ``row_titles`` label
    the rows (the video and frame index of each sample).
    """
    if not rows:
        raise ValueError("plot_sample_grid: no sample rows given")
    columns = list(rows[0])
    if row_titles is not None and len(row_titles) != len(rows):
        raise ValueError(f"plot_sample_grid: {len(row_titles)} row titles for {len(rows)} rows")
    fig = Figure(figsize=(len(columns) * _SAMPLE_INCHES, len(rows) * _SAMPLE_INCHES), layout="constrained")
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for r, row in enumerate(rows):
        if list(row) != columns:
            raise ValueError(f"plot_sample_grid: row {r} has columns {list(row)}, row 0 has {columns}")
        for c, key in enumerate(columns):
            ax = axes[r, c]
            arr = _panel(row[key], key in heatmaps, f"sample row {r} column {key!r}")
            if key in heatmaps:
                shown = ax.imshow(arr, cmap="inferno", vmin=0.0, vmax=max(float(arr.max()), 1e-12))
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
            else:
                ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(key, fontsize=9)
        if row_titles is not None:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=8)
    return _save(fig, path)


def _fmt(x: object) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, float | np.floating):
        return f"{x:.4f}"
    return str(x)


def _fusion(result: ProtocolResult) -> str:
    terms = ", ".join(f"{k} {w:+g}" for k, w in result.weights.items())
    return f"{terms} ({result.normalisation_description if result.normalise else 'raw, no normalisation'})"


def _table(title: str, lines: Sequence[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in lines)
    return "\n".join([title, "-" * len(title), *(f"{name.ljust(width)}  {value}" for name, value in lines)])


#: what the summary of a result without labels says instead of its (undefined) metrics
NO_LABELS = "none: nothing to evaluate against, so no AUC, EER or AP; scores.csv holds every scored frame's signals"


def _pixel_rows(pixel: Mapping[str, object] | str) -> list[tuple[str, str]]:
    """The summary rows of the pixel-level metrics (``vad.evaluation.pixel.evaluation``'s block), or one row saying why there are
    none."""
    if isinstance(pixel, str):
        return [("pixel level", f"not computed: {pixel}")]
    size = pixel.get("mask_size")
    at = "x".join(str(v) for v in size) if size and all(isinstance(v, int) for v in size) else "their masks' sizes"
    aucs = f"{_fmt(pixel.get('auc'))} / {_fmt(pixel.get('auc_anomalous_frames'))}"
    detection = f"{_fmt(pixel.get('rbdc'))} / {_fmt(pixel.get('tbdc'))}"
    return [
        ("pixel AUC (all / anomalous frames)", aucs),
        ("UCSD pixel-level AUC (40 %)", _fmt(pixel.get("ucsd_auc"))),
        (f"RBDC / TBDC ({pixel.get('thresholds')} thresholds)", detection),
        ("pixel frames", f"{pixel.get('frames')} at {at}, {pixel.get('anomalous_frames')} with an anomaly"),
    ]


def _calibrated_rows(block: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The summary rows of the test scored as a stream (metrics.json's ``calibrated`` block, see
    ``vad.app.build.calibrated_metrics``); none without an AUC (no labels)."""
    if block.get("auc_micro") is None:
        return []
    sigma = float(block.get("smoothing") or 0.0)
    how = f"causal sigma {sigma:g}" if sigma else "frame by frame"
    rate = block.get("alert_false_alarm_rate")
    alarms = f", false alarms {100 * rate:.1f}% of normal frames" if rate is not None and np.isfinite(rate) else ""
    return [
        (f"stream micro AUC (calibrated, {how})", _fmt(block["auc_micro"])),
        (
            f"stream alerts (at {100 * float(block['fpr']):g}% on calibration)",
            f"precision {_fmt(block.get('alert_precision'))}, recall {_fmt(block.get('alert_recall'))}{alarms}",
        ),
    ]


def format_summary(
    result: ProtocolResult,
    title: str,
    checkpoint: str | None = None,
    note: str | None = None,
    pixel: Mapping[str, object] | str | None = None,
    calibrated: Mapping[str, object] | None = None,
) -> str:
    """A compact aligned table of a run's numbers and their protocol, printed at the end of a run.

    ``checkpoint`` (the file and how it was selected, e.g. ``.../last.ckpt (last)``) adds a last row; ``note`` (what
    the test videos were, when that is not the dataset's test split) a row ``videos``. A result without labels has
    no metrics: its table says so (:data:`NO_LABELS`) instead of listing them as n/a. ``pixel``: the pixel-level
    metrics (metrics.json's ``pixel`` block) or why they were not computed, as rows after the frame-level ones.
    ``calibrated``: metrics.json's ``calibrated`` block (the test scored as ``vad.score`` scores a stream: calibrated,
    no per-video min-max), as two rows after the protocol's.
    """
    total = len(result.videos)
    if not result.labelled:
        lines = [
            ("labels", NO_LABELS),
            (
                "frames",
                f"{result.n_frames} scored in {total} video{'' if total == 1 else 's'}, {result.n_dropped} dropped",
            ),
            ("score", _fusion(result)),
        ]
    else:
        lines = [
            ("micro AUC (frame level)", _fmt(result.auc_micro)),
            (f"macro AUC ({result.n_macro_videos} of {total} videos)", _fmt(result.auc_macro)),
            ("EER", _fmt(result.eer)),
            ("AP", _fmt(result.ap)),
            ("micro AUC, raw signals", _fmt(result.auc_micro_raw)),
            ("frames", f"{result.n_frames} scored, {result.n_anomalous} anomalous, {result.n_dropped} dropped"),
            ("score", _fusion(result)),
            ("labels", result.label_source or "unrecorded"),
        ]
        if calibrated is not None:
            lines += _calibrated_rows(calibrated)
    if pixel is not None:
        lines += _pixel_rows(pixel)
    if note is not None:
        lines.append(("videos", note))
    if checkpoint is not None:
        lines.append(("checkpoint", checkpoint))
    return _table(title, lines)


def format_untested(title: str, reason: str, checkpoint: str | None = None) -> str:
    """The table of a training run whose test could not run: ``tested  nothing: <reason>`` and the checkpoint."""
    lines = [("tested", f"nothing: {reason}")]
    if checkpoint is not None:
        lines.append(("checkpoint", checkpoint))
    return _table(title, lines)


def format_comparison(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of several runs, aligned for the terminal too: one row per mapping.

    ``columns`` default to every key in first-seen order; floats print with 4 decimals, NaN/None as ``n/a``, a
    missing key as blank; columns whose values are all numbers are right-aligned.
    """
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_fmt(row[c]) if c in row else "" for c in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(c), int | float | np.number) or row.get(c) is None for row in rows) for c in columns
    ]
    widths = [max([len(c), 3, *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        padded = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if num else "-" * w for w, num in zip(widths, numeric, strict=True)]
    return "\n".join([line(columns), line(rule), *(line(r) for r in cells)])


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
