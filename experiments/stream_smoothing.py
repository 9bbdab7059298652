"""What the causal smoothing of stream scores does to a trained detector's calibrated scores and alerts, side by side
(it chooses nothing: the sigma is the run's ``model.smoothing``, chosen by the preset rounds' validation).

    python experiments/stream_smoothing.py --ckpt <run>/checkpoints/last.ckpt --out <folder> [--sigma 2] \
        [--set paths.data_dir=<folder holding ped2> ...]

For sigma 0 (frame by frame) and the given sigma (default: the run's model.smoothing): a copy of the checkpoint is
recalibrated (``vad.calibrate smoothing=<sigma> overwrite=true``), the copy is tested (``vad.evaluate``, the run's
protocol, with ``model.smoothing=<the run's>`` so the protocol's numbers do not move), and its metrics.json's
``calibrated`` block (each test video scored as vad.score scores an input) is printed: the calibrated micro AUC and
the alerts at the threshold of a 1% false-alarm rate on the calibration frames, with the test's normal frames split
into those within the causal kernel after an anomalous frame (where a causal filter lags) and the others. Reads the
test labels to report, as ``vad.evaluate`` does; the checkpoint given is never modified.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from vad.checkpoint_io import saved_config
from vad.evaluation.calibration import Calibration
from vad.evaluation.smoothing import causal_kernel
from vad.reporting.machine import cpu_description


def run(command: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


def false_alarms_after_events(ckpt: Path, scores_csv: Path) -> dict[str, float]:
    """False-alarm rates on the test's normal frames within the causal kernel after an anomalous frame, and on the
    others, at the calibration's 1% threshold."""
    calibration = Calibration.from_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["vad_calibration"])
    threshold = calibration.threshold(0.01)
    videos: dict[str, list[dict[str, str]]] = defaultdict(list)
    with scores_csv.open() as f:
        for row in csv.DictReader(f):
            videos[row["video"]].append(row)
    reach = causal_kernel(calibration.smoothing).size  # a frame's score holds the current and reach - 1 past frames
    counts = {"lag_frames": 0, "lag_alerts": 0, "other_frames": 0, "other_alerts": 0}
    for rows in videos.values():
        raw = {k: np.array([float(r[k]) for r in rows]) for k in calibration.weights}
        alerts = calibration.stream_scores(raw) > threshold
        labels = np.array([int(r["label"]) for r in rows], dtype=bool)
        after = np.zeros(len(rows), dtype=bool)
        for i in np.flatnonzero(labels):
            after[i + 1 : i + reach] = True
        for name, mask in (("lag", ~labels & after), ("other", ~labels & ~after)):
            counts[f"{name}_frames"] += int(mask.sum())
            counts[f"{name}_alerts"] += int(alerts[mask].sum())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sigma", type=float, default=None, help="default: the run's model.smoothing")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for vad.calibrate and vad.evaluate (paths)")
    args = parser.parse_args()
    protocol = float(saved_config(args.ckpt)["config"]["model"].get("smoothing", 0.0))
    sigma = protocol if args.sigma is None else args.sigma
    args.out.mkdir(parents=True, exist_ok=False)  # never writes over an earlier measurement
    print(f"# {args.ckpt}; {cpu_description()}; protocol smoothing sigma {protocol:g}")
    print(
        "| stream smoothing sigma | calibrated micro AUC | threshold (1% on calibration) | alert precision | "
        "alert recall | false alarms on the test's normal frames | of them in the lag after an event | elsewhere |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for value in sorted({0.0, sigma}):
        copy = args.out / f"sigma{value:g}.ckpt"
        shutil.copyfile(args.ckpt, copy)
        run(["vad.calibrate", f"ckpt_path={copy}", "overwrite=true", f"smoothing={value}",
             f"hydra.run.dir={args.out / f'calibrate{value:g}'}", *args.set])  # fmt: skip
        tested = args.out / f"evaluate{value:g}"
        run(["vad.evaluate", f"ckpt_path={copy}", f"model.smoothing={protocol}", f"hydra.run.dir={tested}",
             *args.set])  # fmt: skip
        block = json.loads((tested / "metrics.json").read_text())["calibrated"]
        counts = false_alarms_after_events(copy, tested / "scores.csv")
        lag = f"{counts['lag_alerts'] / counts['lag_frames']:.3f}" if counts["lag_frames"] else "-"
        other = counts["other_alerts"] / counts["other_frames"]
        print(
            f"| {value:g} | {block['auc_micro']:.4f} | {block['threshold']:.3f} | {block['alert_precision']:.3f} | "
            f"{block['alert_recall']:.3f} | {block['alert_false_alarm_rate']:.4f} | "
            f"{counts['lag_alerts']} of {counts['lag_frames']} ({lag}) | "
            f"{counts['other_alerts']} of {counts['other_frames']} ({other:.4f}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
