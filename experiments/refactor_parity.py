"""Same seed -> same scores.csv before and after a refactor of the shared method code, checked byte for byte.

Runs the tiny seeded FFP / MNAD / MNAD-reconstruction trainings of ``tests/support/parity_runs.py`` (3 iterations
each on a 4-video 32x32 set, one intra-op thread) and compares every scores.csv with the files recorded before the
refactor (``tests/data/parity/``), or with the same runs at another commit of the repository (a temporary git worktree):

    python experiments/refactor_parity.py                        # this tree vs tests/data/parity
    python experiments/refactor_parity.py --commit 34415c5       # rerun at that commit, then compare this tree with it

Prints one line per run (identical / differs, with the largest difference of each column) and exits 1 on any
difference. ``tests/integration/test_parity.py`` runs the same comparison in the test suite.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
from parity_runs import GOLDEN, PARITY_RUNS, write_all

REPO = Path(__file__).resolve().parents[1]


def run_at_commit(commit: str, out: Path, scratch: Path) -> None:
    """Write the parity scores of ``commit`` into ``out``: its own src/, conf/ and test helpers, this parity script."""
    tree = scratch / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit], check=True)
    try:
        shutil.copyfile(REPO / "tests" / "support" / "parity_runs.py", tree / "tests" / "parity_runs.py")
        code = (
            "import sys; from pathlib import Path; sys.path.insert(0, 'tests'); "
            f"from parity_runs import write_all; write_all(Path({str(out)!r}), Path({str(scratch / 'runs')!r}))"
        )
        env = dict(os.environ, PYTHONPATH=str(tree / "src"))
        subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=True)


def compare(name: str, expected: Path, actual: Path) -> bool:
    """Print whether two scores.csv files are identical and, when not, the largest difference per column."""
    if expected.read_bytes() == actual.read_bytes():
        print(f"{name:12s} identical ({len(expected.read_text().splitlines()) - 1} frames)")
        return True
    with open(expected, newline="") as f:
        a = list(csv.DictReader(f))
    with open(actual, newline="") as f:
        b = list(csv.DictReader(f))
    if len(a) != len(b) or (a and a[0].keys() != b[0].keys()):
        print(
            f"{name:12s} DIFFERS: {len(a)} vs {len(b)} rows, columns {list(a[0]) if a else []} vs "
            f"{list(b[0]) if b else []}"
        )
        return False
    worst = {
        key: max(abs(float(x[key]) - float(y[key])) for x, y in zip(a, b, strict=True))
        for key in a[0]
        if key not in ("video", "frame", "label")
    }
    print(f"{name:12s} DIFFERS: largest |difference| per column {worst}")
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", help="compare with the runs at this commit instead of tests/data/parity")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        reference = GOLDEN
        if args.commit:
            reference = scratch / "reference"
            run_at_commit(args.commit, reference, scratch / "at_commit")
        current = scratch / "current"
        write_all(current, scratch / "runs")
        same = [compare(name, reference / f"{name}_scores.csv", current / f"{name}_scores.csv") for name in PARITY_RUNS]
    return 0 if all(same) else 1


if __name__ == "__main__":
    raise SystemExit(main())
