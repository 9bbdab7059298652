"""AMC and the co-memory network's CPU presets on UCSD Ped2, next to copy-last, FFP and MNAD at the same size.

    python experiments/amc_ped2_cpu.py --data <folder holding ped2/> --out <runs folder>    # about 1 hour on 2 cores

Runs, one at a time, each into ``--out/<name>`` (a folder that already holds metrics.json is reused):

1. ``experiment=amc_ped2_cpu`` (128x128, clip length 2) and ``experiment=amc_comemory_ped2_cpu`` (64x64, clip 5);
2. copy-last with clip length 2 (AMC's scored frames) at 128x128 and 64x64, and with clip length 5 at 64x64;
3. ``experiment=ffp_ped2_cpu64`` (64x64, clip 5), whose scores.csv holds both its PSNR and its ``patch_max`` signal.

Every number is computed from the runs' scores.csv and metrics.json (last checkpoint, labels of ``ped2.mat``). For
the max-patch methods, the per-video normalisation of the presets (min-max) and the seed's division by the video max
are both reported; for FFP, -PSNR (its preset score) and the worst patch's error (``patch_max``) side by side.
Nothing is chosen here on test labels: the presets' scores were fixed before these runs. Writes
``experiments/results/amc_ped2_cpu.md`` (the discussion below the :data:`DISCUSSION` marker is kept).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vad.evaluation.fusion import NORMALISATIONS
from vad.evaluation.protocol import evaluate
from vad.evaluation.records import VideoSignals
from vad.reporting.files import read_scores_csv

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results" / "amc_ped2_cpu.md"
DISCUSSION = "<!-- discussion: kept by the script -->"
RUNS = {
    "amc_ped2_cpu": ("train", ["experiment=amc_ped2_cpu"]),
    "amc_comemory_ped2_cpu": ("train", ["experiment=amc_comemory_ped2_cpu"]),
    "copy_last_clip2": ("evaluate", ["model=copy_last", "dataset=ped2", "dataset.image_size=[64,64]",
                                     "model.clip_len=2"]),
    "copy_last_128_clip2": ("evaluate", ["model=copy_last", "dataset=ped2", "dataset.image_size=[128,128]",
                                         "model.clip_len=2"]),
    "copy_last_clip5": ("evaluate", ["model=copy_last", "dataset=ped2", "dataset.image_size=[64,64]"]),
    "ffp_ped2_cpu": ("train", ["experiment=ffp_ped2_cpu64"]),
}  # fmt: skip


def run(name: str, out: Path, data: Path) -> Path:
    folder = out / name
    if (folder / "metrics.json").is_file():
        return folder
    entry, args = RUNS[name]
    command = [sys.executable, "-m", f"vad.{entry}", *args, f"paths.data_dir={data}", f"hydra.run.dir={folder}"]
    print(" ".join(command[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run([*command, "callbacks.progress_bar.refresh_rate=0"] if entry == "train" else command, check=True)
    print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    return folder


def videos_of(folder: Path) -> list[VideoSignals]:
    return read_scores_csv(folder / "scores.csv")


def row(label: str, folder: Path, weights: dict[str, float], normalisation: str, note: str = "") -> str:
    metrics = json.loads((folder / "metrics.json").read_text())
    result = evaluate(videos_of(folder), weights, normalisation=normalisation)
    minutes = (metrics.get("train_seconds") or 0) / 60
    budget = f"{metrics['train_steps']} it, {minutes:.1f} min" if metrics.get("train_steps") else "none"
    score = " + ".join(f"{w:+g} {k}" for k, w in weights.items())
    return (
        f"| {label} | {score} | {NORMALISATIONS[normalisation]} | {budget} | {result.auc_micro:.4f} | "
        f"{result.auc_macro:.4f} | {note} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder holding ped2/")
    parser.add_argument("--out", type=Path, required=True, help="folder of the run folders")
    parser.add_argument("--commit", default="", help="the commit the runs were made from, for the table")
    args = parser.parse_args()
    folders = {name: run(name, args.out, args.data) for name in RUNS}
    patch = {"patch_score": 1.0}
    psnr = {"psnr": -1.0}
    lines = [
        "# AMC and the co-memory network on UCSD Ped2 (CPU presets), next to copy-last and FFP",
        "",
        f"Runs from a fresh clone{f' ({args.commit})' if args.commit else ''}, one at a time, 2-core CPU, last "
        "checkpoint, labels of `ped2.mat`, grey (AMC 128x128, the others 64x64). "
        "`python experiments/amc_ped2_cpu.py --data ... --out ...`.",
        "",
        "| run | score | per-video normalisation | budget (train) | micro AUC | macro AUC | note |",
        "|---|---|---|---|---:|---:|---|",
        row("copy-last, clip 2, 64x64", folders["copy_last_clip2"], psnr, "minmax", "floor of the co-memory size"),
        row("copy-last, clip 2, 128x128 (AMC's size)", folders["copy_last_128_clip2"], psnr, "minmax", "floor"),
        row(
            "AMC `amc_ped2_cpu`",
            folders["amc_ped2_cpu"],
            {"flow_error": 1.0},
            "minmax",
            "preset (size and score chosen by validation)",
        ),
        row("AMC `amc_ped2_cpu`", folders["amc_ped2_cpu"], {"patch_flow_error": 1.0}, "minmax", "worst patch's flow"),
        row("AMC `amc_ped2_cpu`", folders["amc_ped2_cpu"], patch, "minmax", "the paper's max-patch score"),
        row("AMC `amc_ped2_cpu`", folders["amc_ped2_cpu"], patch, "max", "max-patch, the seed's division"),
        row("AMC `amc_ped2_cpu`", folders["amc_ped2_cpu"], psnr, "minmax", "reconstruction"),
        row("copy-last, clip 5", folders["copy_last_clip5"], psnr, "minmax", "floor"),
        row(
            "co-memory `amc_comemory_ped2_cpu`",
            folders["amc_comemory_ped2_cpu"],
            psnr,
            "minmax",
            "preset (score chosen by validation)",
        ),
        row("co-memory `amc_comemory_ped2_cpu`", folders["amc_comemory_ped2_cpu"], patch, "minmax", "max-patch score"),
        row(
            "co-memory `amc_comemory_ped2_cpu`",
            folders["amc_comemory_ped2_cpu"],
            patch,
            "max",
            "max-patch, the seed's division",
        ),
        row("FFP `ffp_ped2_cpu64`", folders["ffp_ped2_cpu"], psnr, "minmax", "preset"),
        row("FFP `ffp_ped2_cpu64`", folders["ffp_ped2_cpu"], {"patch_max": 1.0}, "minmax", "same run, max-patch error"),
        "| MNAD `mnad_ped2_cpu` (experiments/results/mnad_ped2_cpu.md) | -0.6 psnr + 0.4 feature_distance | "
        "per-video min-max | 6000 it | 0.9127 | 0.8959 | earlier run |",
    ]
    for name in ("amc_ped2_cpu", "amc_comemory_ped2_cpu"):
        metrics = json.loads((folders[name] / "metrics.json").read_text())
        lines.append("")
        lines.append(
            f"`{name}`: validation micro AUC (pseudo-anomalies in 2 held-out training videos, no test label) "
            f"{metrics.get('val_auc_micro_final', float('nan')):.4f}; training means {metrics.get('training_means')}."
        )
    scores = np.concatenate([v.signals["patch_score"] for v in videos_of(folders["amc_ped2_cpu"])])
    lines.append("")
    lines.append(
        f"AMC's raw patch scores lie in [{scores.min():.2f}, {scores.max():.2f}] ({(scores < 0).mean():.0%} negative): "
        "dividing a video's scores by its max reverses the order of negative scores, which is why the presets "
        "normalise by min-max (where the constant log w of the score cancels)."
    )
    previous = RESULTS.read_text() if RESULTS.is_file() else ""
    kept = previous[previous.index(DISCUSSION) :] if DISCUSSION in previous else DISCUSSION + "\n"
    RESULTS.write_text("\n".join(lines) + "\n\n" + kept)
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
