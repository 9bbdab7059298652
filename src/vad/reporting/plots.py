"""The report's figures: per-video score curves, the ROC curve, the grid of sample panels (PNG files).

    plot_score_curves(run_dir / "score_curves.png", result, full_labels)
    plot_roc(run_dir / "roc.png", result)

Plots use matplotlib's Agg canvas directly and never touch pyplot's global state; each file is written atomically
(:func:`vad.io.atomic_path`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from vad.evaluation.protocol import ProtocolResult
from vad.io import atomic_path

_PANEL_INCHES = (4.0, 2.2)  # one score-curve subplot
_SAMPLE_INCHES = 2.5  # one sample-grid cell
_DPI = 100


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return Path(path)


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
