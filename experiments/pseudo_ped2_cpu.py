"""Pseudo-anomalies on UCSD Ped2, CPU-sized: FFP with the skip-frame and the patch plug-ins and the two-branch
pseudo-anomaly method, each against plain FFP at the same size and budget; and whether the validation AUC (pseudo-
anomalies injected into held-out normal training videos) can choose: its Spearman correlation with the test AUC across
the checkpoints of one run and across the jobs of a small sweep.

    python experiments/pseudo_ped2_cpu.py --data <folder holding ped2/>          # about 1 hour on 2 cores

Runs, one at a time, into ``--out/<name>`` (a finished run folder is reused):

1. copy-last (untrained) at 64x64, clip length 5;
2. plain FFP, ``experiment=ffp_ped2_cpu64`` with 2 held-out training videos (validation every 1000 iterations, every
   1000-iteration checkpoint kept), tested on its LAST checkpoint; the same for FFP + ``pseudo=skip_frame`` and
   FFP + ``pseudo=patch`` (the plug-ins' default options: probability 0.2, "do not reconstruct");
3. ``experiment=pseudo_anomaly_ped2_cpu`` for as many iterations as fit in plain FFP's training time (a 200-iteration
   run measures its speed), lr step at 80%;
4. every run's best-validation checkpoint tested as well (``vad.evaluate ckpt_path=<best-val file>``);
5. the correlation: every kept checkpoint of the plain FFP run scored on the test set (``select=best_on_test``'s
   scan, which is labelled test-selected; here only its per-checkpoint numbers are used, to correlate) against its
   validation AUC; and a 4-job sweep of plain FFP (1000 iterations; gradient weight 0 / 1 x lr_g 1e-4 / 4e-4), each
   job's validation AUC against its test AUC.

Every test number is read from metrics.json; nothing is chosen on test labels. Writes
``experiments/results/pseudo_ped2_cpu.md``, keeping the hand-written discussion below :data:`DISCUSSION`.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
VAL = [
    "dataset.val_videos=2",
    "trainer.val_check_interval=1000",
    "trainer.check_val_every_n_epoch=null",
    "callbacks.model_checkpoint.every_n_train_steps=1000",
    "callbacks.model_checkpoint.save_top_k=-1",
]
FFP = ["experiment=ffp_ped2_cpu64", *VAL]
SWEEP = ["model.loss.gradient=0,1", "model.optim.lr_g=1e-4,4e-4", "trainer.max_steps=1000",
         "model.optim.milestones=[800]", "dataset.val_videos=2"]  # fmt: skip
CALIBRATION_STEPS = 200
DISCUSSION = "<!-- discussion: kept by the script -->"


def run(entry: str, name: str, args: list[str], out: Path, data: Path, multirun: bool = False) -> Path:
    """``python -m vad.<entry> <args>`` into ``out/<name>`` unless it finished already; returns the folder."""
    folder = out / name
    done = folder / ("sweep_summary.csv" if multirun else "metrics.json")
    if not done.is_file():
        where = f"hydra.sweep.dir={folder}" if multirun else f"hydra.run.dir={folder}"
        command = [sys.executable, "-m", f"vad.{entry}", *(["-m"] if multirun else []), *args,
                   f"paths.data_dir={data}", where]  # fmt: skip
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(command[2:])}", flush=True)
        with open(out / f"{name}.log", "w") as log:
            code = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        if code != 0:
            raise SystemExit(f"{name} failed (exit {code}); see {out / f'{name}.log'}")
    return folder


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def logged_val(folder: Path) -> dict[int, float]:
    """step -> val/auc_micro logged during training (the validation at that step)."""
    with open(folder / "csv" / "metrics.csv", newline="") as f:
        return {int(r["step"]): float(r["val/auc_micro"]) for r in csv.DictReader(f) if r.get("val/auc_micro")}


def best_val(name: str, folder: Path, out: Path, data: Path) -> dict:
    """The run's best-validation checkpoint tested (its own folder ``<name>_best_val``)."""
    best = sorted((folder / "checkpoints").glob("best-val-step*.ckpt"))
    if not best:
        raise SystemExit(f"{folder}: no best-val checkpoint (no validation ran?)")
    return metrics(run("evaluate", f"{name}_best_val", [f"ckpt_path={best[-1]}"], out, data))


def row(label: str, budget: str, m: dict, best: dict, best_score: float) -> str:
    val = m.get("val_auc_micro_final")
    chosen = f"{best['auc_micro']:.4f} / {best['auc_macro']:.4f} (val {best_score:.4f})"
    return (
        f"| {label} | {budget} | {m.get('train_seconds', 0) / 60:.1f} min | {m['auc_micro']:.4f} | "
        f"{m['auc_macro']:.4f} | {'' if val is None else f'{val:.4f}'} | {chosen} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding ped2/ (paths.data_dir)")
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "pseudo_ped2_cpu")
    parser.add_argument("--report", type=Path, default=REPO / "experiments" / "results" / "pseudo_ped2_cpu.md")
    args = parser.parse_args()
    out, data = args.out.resolve(), args.data.resolve()
    out.mkdir(parents=True, exist_ok=True)

    copy = metrics(run("evaluate", "copy_last", ["model=copy_last", "dataset=ped2", "dataset.image_size=[64,64]"],
                       out, data))  # fmt: skip
    plain = run("train", "ffp", FFP, out, data)
    skip = run("train", "ffp_skip_frame", [*FFP, "pseudo=skip_frame"], out, data)
    patch = run("train", "ffp_patch", [*FFP, "pseudo=patch"], out, data)
    calibration = metrics(run("train", "pseudo_anomaly_calibration",
                              ["experiment=pseudo_anomaly_ped2_cpu", f"trainer.max_steps={CALIBRATION_STEPS}",
                               "dataset.val_videos=0"], out, data))  # fmt: skip
    rate = CALIBRATION_STEPS / calibration["train_seconds"]
    budget = metrics(plain)["train_seconds"]
    steps = max(200, round(budget * rate / 100) * 100)
    pseudo = run("train", "pseudo_anomaly", ["experiment=pseudo_anomaly_ped2_cpu", f"trainer.max_steps={steps}",
                                             f"model.optim.milestones=[{int(0.8 * steps)}]",
                                             "callbacks.model_checkpoint.every_n_train_steps=1000",
                                             "callbacks.model_checkpoint.save_top_k=-1"], out, data)  # fmt: skip

    rows = []
    for label, name, folder in (
        ("FFP `ffp_ped2_cpu64`", "ffp", plain),
        ("FFP + `pseudo=skip_frame`", "ffp_skip_frame", skip),
        ("FFP + `pseudo=patch`", "ffp_patch", patch),
        ("`pseudo_anomaly_ped2_cpu`", "pseudo_anomaly", pseudo),
    ):
        m = metrics(folder)
        best_score = max(logged_val(folder).values())  # what the best-val checkpoint was kept for
        rows.append(row(label, f"{m['train_steps']} it x 8", m, best_val(name, folder, out, data), best_score))

    # across the checkpoints of one run: validation AUC at each step against the test AUC of that step's checkpoint
    scan_folder = run("evaluate", "ffp_checkpoint_scan", [f"ckpt_path={plain}", "select=best_on_test"], out, data)
    scan = json.loads((scan_folder / "best_on_test_scan.json").read_text())
    val = logged_val(plain)
    pairs = []
    for file, test_auc in scan.items():
        stem = Path(file).stem
        if stem.startswith("step"):
            step = int(stem.removeprefix("step"))
            # Lightning logs a validation run inside iteration N (0-based) at step N, and the checkpoint saved at the
            # end of that iteration is named after the iterations done, N + 1
            logged = val.get(step - 1, val.get(step))
            if logged is not None:
                pairs.append((step, logged, test_auc))
    pairs.sort()
    rho_ckpt = spearmanr([p[1] for p in pairs], [p[2] for p in pairs]).statistic if len(pairs) > 2 else float("nan")

    # across the jobs of a small sweep
    sweep = run("train", "ffp_sweep", ["experiment=ffp_ped2_cpu64", *SWEEP], out, data, multirun=True)
    jobs = [metrics(p) for p in sorted(sweep.iterdir()) if (p / "metrics.json").is_file()]
    job_pairs = [(j["val_auc_micro"], j["auc_micro"]) for j in jobs]
    rho_jobs = spearmanr(*zip(*job_pairs, strict=True)).statistic if len(job_pairs) > 2 else float("nan")
    chosen = max(range(len(jobs)), key=lambda i: job_pairs[i][0])

    machine = copy["machine"]
    held = ", ".join(v["video"] for v in json.loads((plain / "val_pseudo.json").read_text())["videos"])
    best_test, worst_test = max(p[1] for p in job_pairs), min(p[1] for p in job_pairs)
    header = (
        "| run | budget | train wall | test micro AUC (last ckpt) | test macro AUC (last) | val micro AUC (last) "
        "| test micro / macro AUC of the best-val checkpoint |"
    )
    text = f"""# Pseudo-anomalies on UCSD Ped2 (CPU-sized), and whether validation AUC can choose

Generated by `python experiments/pseudo_ped2_cpu.py --data <folder holding ped2/>` (run folders in
`{out.relative_to(REPO) if out.is_relative_to(REPO) else out}`). UCSD Ped2, 64x64 grey, clip length 5 ({copy["frames"]}
scored test frames), labels `{copy["label_source"]}`, per-video min-max, seed 0. Every trained run holds training
videos {held} out: pseudo-anomalies are
injected into them (`vad.data.pseudo.validation`, default options) and give the validation AUC; no test label is read
before the test. Machine: {machine["cpu"]}, {machine["cpu_count"]} logical cores, torch {copy["versions"]["torch"]};
commit {copy["git_commit"]}.

{header}
|---|---|---|---:|---:|---:|---|
| copy-last (untrained) | none | – | {copy["auc_micro"]:.4f} | {copy["auc_macro"]:.4f} | | |
{chr(10).join(rows)}

`pseudo_anomaly_ped2_cpu` trained for {steps} iterations, the iterations that fit in plain FFP's training time
({budget / 60:.1f} min; {rate:.2f} it/s measured over {CALIBRATION_STEPS} iterations).

## Can the validation AUC choose?

Across the {len(pairs)} kept checkpoints of the plain FFP run (every 1000 iterations): Spearman rho between the
validation micro AUC logged at that step and the test micro AUC of that step's checkpoint = **{rho_ckpt:.3f}**.

| step | val micro AUC | test micro AUC |
|---:|---:|---:|
{chr(10).join(f"| {s} | {v:.4f} | {t:.4f} |" for s, v, t in pairs)}

Across the {len(jobs)} jobs of a sweep of plain FFP (1000 iterations; gradient weight 0 / 1 x lr_g 1e-4 / 4e-4;
last checkpoints): Spearman rho between validation and test micro AUC = **{rho_jobs:.3f}**; the job the
validation AUC picks has test micro AUC {job_pairs[chosen][1]:.4f} (best job on test: {best_test:.4f}, worst:
{worst_test:.4f}).

| job | val micro AUC | test micro AUC |
|---:|---:|---:|
{chr(10).join(f"| {i} | {v:.4f} | {t:.4f} |" for i, (v, t) in enumerate(job_pairs))}
"""
    if args.report.is_file() and DISCUSSION in (kept := args.report.read_text()):
        text += "\n" + kept[kept.index(DISCUSSION) :]
    args.report.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
