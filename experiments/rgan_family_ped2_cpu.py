"""The r-GAN family's CPU presets on UCSD Ped2 next to copy-last and FFP at the same size, clip length and wall time.

    python experiments/rgan_family_ped2_cpu.py --data <folder holding ped2/>     # about 2 hours on 2 cores

Runs, one at a time (two trainings at once on 2 cores slow each other down unevenly), each into ``--out/<name>``:

1. copy-last (untrained: frame t as the prediction of t+1) at 64x64, clip length 4;
2. ``experiment=rgan_ped2_cpu``, ``rgan_latent_ped2_cpu``, ``rvae_ped2_cpu`` (64x64, t = 3, clip length 4);
3. FFP at the same size and clip length (``experiment=ffp_ped2_cpu64 model.clip_len=4``): a 400-iteration run measures
   its speed, and the comparison run gets as many iterations as fit in the presets' mean training time (the lr step
   at 80% of them, as in every CPU preset).

Every number is read from the runs' metrics.json (last checkpoint, per-video min-max, labels of ``ped2.mat``):
nothing is chosen here, on test labels or otherwise. A run folder that already holds metrics.json is reused, so an
interrupted script picks up where it stopped. Writes ``experiments/results/rgan_family_ped2_cpu.md``, keeping the
hand-written discussion below its :data:`DISCUSSION` marker.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
PRESETS = ("rgan_ped2_cpu", "rgan_latent_ped2_cpu", "rvae_ped2_cpu")
FFP = ["experiment=ffp_ped2_cpu64", "model.clip_len=4"]
CALIBRATION_STEPS = 400
#: the report's text from this marker on is written by hand and kept when the script rewrites the tables above it
DISCUSSION = "<!-- discussion: kept by the script -->"


def run(entry: str, name: str, args: list[str], out: Path, data: Path) -> dict:
    """``python -m vad.<entry> <args>`` into ``out/<name>`` unless it already finished; returns its metrics.json."""
    folder = out / name
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        command = [sys.executable, "-m", f"vad.{entry}", *args, f"paths.data_dir={data}", f"hydra.run.dir={folder}"]
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(command[2:])}", flush=True)
        log = out / f"{name}.log"
        with open(log, "w") as f:
            done = subprocess.run(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed (exit {done.returncode}); see {log}")
    return json.loads(metrics.read_text()) | {"name": name, "folder": str(folder)}


def generator_parameters(result: dict) -> int | None:
    checkpoint = result.get("checkpoint")
    if not checkpoint:
        return None
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return sum(v.numel() for k, v in state.items() if k.startswith("generator."))


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def iterations(result: dict) -> str:
    """The run's generator steps, read from its metrics.json, as "N it x batch 8" (every run here uses batch 8)."""
    return f"{result['train_steps']} it x 8"


def table(rows: list[tuple[str, str, dict]]) -> str:
    lines = [
        "| run | budget | generator parameters | train wall | test wall | micro AUC | macro AUC | EER | AP | raw AUC "
        "| commit |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for label, budget, r in rows:
        params = generator_parameters(r)
        lines.append(
            f"| {label} | {budget} | {'' if params is None else f'{params:,}'} | {minutes(r.get('train_seconds'))} | "
            f"{minutes(r.get('test_seconds'))} | {r['auc_micro']:.4f} | {r['auc_macro']:.4f} | {r['eer']:.4f} | "
            f"{r['ap']:.4f} | {r['auc_micro_raw']:.4f} | {(r.get('git_commit') or '')[:7]} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding ped2/ (paths.data_dir)")
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "rgan_family_ped2_cpu", help="run folders")
    parser.add_argument("--report", type=Path, default=REPO / "experiments" / "results" / "rgan_family_ped2_cpu.md")
    args = parser.parse_args()
    out, data = args.out.resolve(), args.data.resolve()
    out.mkdir(parents=True, exist_ok=True)

    baseline = run(
        "evaluate", "copy_last", ["model=copy_last", "dataset=ped2", "dataset.image_size=[64,64]", "model.clip_len=4"],
        out, data,
    )  # fmt: skip
    presets = {name: run("train", name, [f"experiment={name}"], out, data) for name in PRESETS}
    calibration = run("train", "ffp_calibration", [*FFP, f"trainer.max_steps={CALIBRATION_STEPS}"], out, data)
    rate = calibration["train_steps"] / calibration["train_seconds"]
    budget = statistics.mean(r["train_seconds"] for r in presets.values())
    steps = max(100, round(budget * rate / 100) * 100)
    milestone = int(0.8 * steps)
    ffp = run("train", "ffp_same_budget", [*FFP, f"trainer.max_steps={steps}", f"model.optim.milestones=[{milestone}]"],
              out, data)  # fmt: skip

    # A reused FFP run (its folder already finished) keeps the budget it was given then: describe the run itself.
    ffp_config = OmegaConf.load(Path(ffp["folder"]) / ".hydra" / "config.yaml")
    ffp_steps, ffp_milestones = ffp["train_steps"], list(ffp_config.model.optim.milestones)
    machine = baseline["machine"]
    rows = [
        ("copy-last (untrained)", "none", baseline),
        ("r-GAN `rgan_ped2_cpu`", iterations(presets["rgan_ped2_cpu"]), presets["rgan_ped2_cpu"]),
        ("r-GAN* `rgan_latent_ped2_cpu`", iterations(presets["rgan_latent_ped2_cpu"]), presets["rgan_latent_ped2_cpu"]),
        ("r-VAE `rvae_ped2_cpu`", iterations(presets["rvae_ped2_cpu"]), presets["rvae_ped2_cpu"]),
        ("FFP `ffp_ped2_cpu64 model.clip_len=4`, same wall time", iterations(ffp), ffp),
    ]
    frames = {r["frames"] for _, _, r in rows}
    dirty = " (with uncommitted changes)" if any(r["git_dirty"] for _, _, r in rows) else ""
    text = f"""# The r-GAN family on UCSD Ped2, CPU-sized, against copy-last and FFP at the same budget

Generated by `python experiments/rgan_family_ped2_cpu.py --data <folder holding ped2/>` (run folders and logs in
`{out.relative_to(REPO) if out.is_relative_to(REPO) else out}`). Every row: UCSD Ped2 (16 training videos, 12 test
videos), 64x64 grey frames, clip length 4 (t = 3 input frames, so the first 3 frames of each test video are not
scored: {", ".join(str(f) for f in sorted(frames))} scored frames), labels `{baseline["label_source"]}`, the score
normalised per video (min-max), the LAST checkpoint, seed 0. Nothing here is chosen on test labels; the presets
were chosen on held-out normal training videos (see the discussion for what prompted that search).
Machine: {machine["cpu"]}, {machine["cpu_count"]} logical cores, {machine["torch_threads"]} torch threads,
torch {baseline["versions"]["torch"]}; the commit of each run in the table{dirty}.

{table(rows)}

FFP's row: the CPU FFP preset (U-Net width 16, PatchGAN 32-128, intensity + gradient + adversarial, Adam 2e-4 /
2e-5) at clip length 4, trained for {ffp_steps} iterations, the lr step at {ffp_milestones}: as many as fit in the
presets' mean training time when it ran, at FFP's speed measured over {CALIBRATION_STEPS} iterations ({rate:.2f}
it/s); the presets' mean training time in this table is {minutes(budget)} (with this table's speed:
{steps} iterations).
Scores: r-GAN and r-GAN* -PSNR (chosen over their prediction loss by validation AUC on pseudo-anomalies in held-out
normal training videos: `experiments/results/rgan_family_validation.md`), r-VAE the per-frame MSE, FFP and
copy-last -PSNR. The presets' departures from the papers (residual
read-out, squared error) were chosen on held-out normal training videos: `experiments/results/rgan_family_pilots.md`.
"raw AUC": the micro AUC without per-video normalisation.
"""
    if args.report.is_file() and DISCUSSION in (kept := args.report.read_text()):
        text += "\n" + kept[kept.index(DISCUSSION) :]  # the hand-written discussion below the marker stays
    args.report.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
