"""The tables printed at the end of a run: a run's numbers with their protocol, an untested run, several runs.

print(format_summary(result, "ffp on ped2", checkpoint=".../last.ckpt (last)"))
print(format_comparison([{"run": "a", "auc": 0.91}, {"run": "b", "auc": 0.93}]))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vad.evaluation.protocol import ProtocolResult


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
    """The summary rows of the pixel-level metrics (``vad.evaluation.pixel.evaluation``'s block), or one row saying
    why there are none."""
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
    ``vad.evaluation.calibration.calibrated_metrics``); none without an AUC (no labels)."""
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
