"""Every method gives the same results before and after a restructuring of src/vad, byte for byte.

Trains a tiny seeded run of each method config (FFP, FFP with a training pseudo-anomaly, MNAD, MNAD's
reconstruction variant, AMC, co-memory, r-GAN, r-GAN*, r-VAE, the two-branch pseudo-anomaly method; 3 iterations on
the tiny synthetic set of tests/support/hydra_runs.py, one held-out video, tested and calibrated) and evaluates
copy-last, in a tree of another commit (a temporary git worktree, its own src/ and hydra_runs.py) and in this one,
one intra-op thread each; then compares every scores.csv and the metrics.json numbers (AUCs, EER, AP, validation AUC,
the calibrated block).

    python experiments/restructure_parity.py --commit 9aa94c9      # the commit before the restructuring

Prints one line per run and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMON = [
    "trainer.max_steps=3",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar.refresh_rate=0",
    "dataset.val_videos=1",
    "dataset.batch_size=4",
    "seed=3",
]
TINY_FFP = ["model=ffp", "model.generator.features=4", "model.discriminator.features=[4,8,8,8]"]
RUNS = {
    "ffp": [*TINY_FFP, "model.loss.flow=1"],
    "ffp_pseudo": [*TINY_FFP, "pseudo=patch"],
    "mnad": ["model=mnad"],
    "mnad_recon": ["model=mnad_recon"],
    "amc": ["model=amc", "flow=none"],
    "amc_comemory": ["model=amc_comemory", "flow=none"],
    "rgan": ["model=rgan"],
    "rgan_latent": ["model=rgan_latent"],
    "rvae": ["model=rvae"],
    "pseudo_anomaly": ["model=pseudo_anomaly"],
}
METRICS = ("auc_micro", "auc_macro", "eer", "ap", "auc_micro_raw", "val_auc_micro", "calibrated")

# Runs inside the tree being measured (its src/ first on the path): both layouts' entry points are tried.
RUNNER = """
import json, shutil, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
tree, out = Path(sys.argv[1]), Path(sys.argv[2])
runs, common, keys = (json.loads(a) for a in sys.argv[3:6])
sys.path[:0] = [str(tree / "tests" / "support"), str(tree / "tests")]  # this layout, the old flat one
from hydra_runs import hydra_job, tiny_synthetic
try:
    from vad.app.train import train
    from vad.app.evaluate import evaluate
except ImportError:
    from vad.train import train
    from vad.evaluate import evaluate
home = out / "home"
data = tiny_synthetic(home / "synthetic")
for name, overrides in runs.items():
    train(hydra_job("train", [*data, *common, *overrides], home / name, home))
    shutil.copy(home / name / "scores.csv", out / f"{name}_scores.csv")
    m = json.loads((home / name / "metrics.json").read_text())
    (out / f"{name}_metrics.json").write_text(json.dumps({k: m.get(k) for k in keys}, indent=1, sort_keys=True))
evaluate(hydra_job("eval", [*data, "model=copy_last", "seed=3"], home / "copy_last", home))
shutil.copy(home / "copy_last" / "scores.csv", out / "copy_last_scores.csv")
"""


def run_tree(tree: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env_path = str(tree / "src")
    command = [sys.executable, "-c", RUNNER, str(tree), str(out), json.dumps(RUNS), json.dumps(COMMON),
               json.dumps(list(METRICS))]  # fmt: skip
    subprocess.run(command, check=True, cwd=tree, env={**_env(), "PYTHONPATH": env_path})


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", required=True, help="the commit to compare this tree with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.commit], check=True)
        try:
            run_tree(base, Path(scratch) / "before")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=True)
        run_tree(REPO, Path(scratch) / "after")
        same = True
        for name in [*RUNS, "copy_last"]:
            files = [f"{name}_scores.csv"] + ([f"{name}_metrics.json"] if name in RUNS else [])
            for file in files:
                equal = filecmp.cmp(Path(scratch) / "before" / file, Path(scratch) / "after" / file, shallow=False)
                same &= equal
                print(f"{file}: {'identical' if equal else 'DIFFERS'}")
        shutil.rmtree(Path(scratch) / "before", ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
