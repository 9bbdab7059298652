"""Tiny seeded training runs whose scores.csv must not change when the shared method code is refactored.

The files in ``tests/data/parity/`` were written by these runs at commit 34415c5 (``platform.json``: torch, CPU
capability, one thread; the CPU, an Intel Xeon VM with AMX, added when an AMD EPYC with the same capability
got other kernels), before the method kit moved
FFP's and MNAD's repeated code into the base (``experiments/refactor_parity.py`` reruns them at any commit and
compares the files byte for byte; ``tests/test_parity.py`` compares the current code with them).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from hydra_runs import TINY_FFP, hydra_job, tiny_dataset

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "parity"

_RUN = ["debug=tiny"]
#: name -> overrides on top of the tiny dataset; FFP with all four terms (LK flow), MNAD's two variants
PARITY_RUNS: dict[str, list[str]] = {
    "ffp": [*TINY_FFP, "flow=lk", "model.loss.flow=2"],
    "mnad": ["model=mnad", "model.net.features=2", "model.memory.num_items=4", *_RUN],
    "mnad_recon": ["model=mnad_recon", "model.net.features=2", "model.memory.num_items=4", *_RUN],
}


def parity_run(name: str, workdir: Path) -> Path:
    """Train and test run ``name`` (seed 0) in ``workdir`` on one intra-op thread; returns its scores.csv.

    One thread: oneDNN's reductions depend on the thread count (2 threads move the tiny MNAD's PSNR by 1e-4 dB).
    """
    import torch

    from vad.app.train import train

    data = tiny_dataset(workdir / "tiny")
    run = workdir / name
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(hydra_job("train", [*data, *PARITY_RUNS[name], "seed=0"], run, workdir))
    finally:
        torch.set_num_threads(threads)
    return run / "scores.csv"


def write_all(out: Path, workdir: Path) -> list[Path]:
    """Run every parity run and copy its scores.csv to ``out/<name>_scores.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PARITY_RUNS:
        target = out / f"{name}_scores.csv"
        shutil.copyfile(parity_run(name, workdir / name), target)
        written.append(target)
    return written
