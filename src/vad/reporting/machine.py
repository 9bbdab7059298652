"""What ran a job, recorded in every metrics.json and benchmark: package versions, the git commit, the machine.

meta = run_metadata() | {"seed": 0}
print(cpu_description())
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import vad
from vad.precision import cpu_bf16_units


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
