"""Start-up time of the entry points: how long ``--help`` and a refused override take to reach the user.

    python experiments/bench_startup.py [--repeats 5]

For every entry point (vad.train, vad.evaluate, vad.score, vad.calibrate, vad.export, vad.prepare) the wall time of
``python -m <entry> --help`` and of ``python -m <entry> paths.no_such_key=1`` (a mistyped key, refused in one line),
the median of ``--repeats`` runs, side by side with ``python -c "import lightning"`` (what every command paid before
the heavy imports moved into the functions that need them). Goal: <= 1.5 s. Writes
``experiments/results/bench_startup.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "bench_startup.md"
ENTRY_POINTS = ("vad.train", "vad.evaluate", "vad.score", "vad.calibrate", "vad.export", "vad.prepare")
GOAL = 1.5


def wall(args: list[str], home: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], capture_output=True, cwd=home, env=dict(os.environ, VAD_HOME=home),
                       check=False)  # fmt: skip
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        lightning = wall(["-c", "import lightning"], home, args.repeats)
        print(f"import lightning alone: {lightning:.2f} s", flush=True)
        rows = []
        for entry in ENTRY_POINTS:
            help_s = wall(["-m", entry, "--help"], home, args.repeats)
            error_s = wall(["-m", entry, "paths.no_such_key=1"], home, args.repeats)
            rows.append((entry, help_s, error_s))
            print(f"{entry}: --help {help_s:.2f} s, mistyped key {error_s:.2f} s", flush=True)
    worst = max(max(h, e) for _, h, e in rows)
    lines = [
        "# Start-up: --help and a refused override, per entry point",
        "",
        f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"median of {args.repeats} runs; `python experiments/bench_startup.py`.",
        "",
        "| entry point | `--help` (s) | `paths.no_such_key=1` (s) | vs `import lightning` alone |",
        "|---|---:|---:|---:|",
    ]
    for entry, help_s, error_s in rows:
        lines.append(f"| {entry} | {help_s:.2f} | {error_s:.2f} | {max(help_s, error_s) / lightning:.2f}x |")
    lines += [
        "",
        f"`import lightning` alone: {lightning:.2f} s (every command paid at least this before). Goal <= {GOAL} s: "
        f"{'met' if worst <= GOAL else 'NOT met'} (worst {worst:.2f} s). An override of a wrong type "
        "(`trainer.max_steps=abc`) still imports the class the key is passed to, to read its annotation.",
    ]
    if not args.no_write:
        RESULTS.write_text("\n".join(lines) + "\n")
        print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
