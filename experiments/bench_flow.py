"""CPU time per image pair of the flow estimators at 64x64 and 256x256, next to an FFP U-Net forward for scale.

For each size, a batch of 4 pairs goes through each estimator; the table holds milliseconds per pair (batch time / 4),
median over interleaved repeats (a shared machine hurts all rows alike). "fwd+bwd" is forward plus the backward of
a mean-|flow| loss to the second frame, the cost the FFP flow loss adds to a generator step. FlowNet2-SD runs with
random weights (same arithmetic as the published ones). The U-Net row is the FFP generator (4 grey frames -> 1 frame,
width 64) on a batch of 4, per sample. Results go to experiments/results/bench_flow.md.

    python experiments/bench_flow.py                      # torch's default thread count
    python experiments/bench_flow.py --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vad.flow import DISFlow, FlowNet2SD, LucasKanade
from vad.nets.unet import UNet

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results" / "bench_flow.md"
BATCH = 4


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def cases(size: int, skip_flownet_backward: bool) -> dict[str, Callable[[], None]]:
    """Name -> a closure that runs one batch of BATCH pairs (or one U-Net batch) at ``size``."""
    a = torch.rand(BATCH, 1, size, size) * 2 - 1
    b = torch.rand(BATCH, 1, size, size) * 2 - 1
    lk, dis, flownet = LucasKanade(), DISFlow(), FlowNet2SD()
    unet = UNet(in_channels=4, out_channels=1).eval()
    clip = torch.rand(BATCH, 4, size, size) * 2 - 1

    def forward(estimator: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                estimator(a, b)

        return run

    def forward_backward(estimator: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            estimator(a, b.clone().requires_grad_(True)).abs().mean().backward()

        return run

    def unet_forward() -> None:
        with torch.no_grad():
            unet(clip)

    runs = {
        "lk (fwd)": forward(lk),
        "lk (fwd+bwd)": forward_backward(lk),
        "dis medium (fwd)": forward(dis),
        "flownet2sd (fwd)": forward(flownet),
    }
    if not skip_flownet_backward:
        runs["flownet2sd (fwd+bwd)"] = forward_backward(flownet)
    runs["U-Net FFP generator (fwd, per sample)"] = unet_forward
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows: dict[str, dict[int, float]] = {}
    for size in args.sizes:
        runs = cases(size, skip_flownet_backward=size > 128)
        for run in runs.values():
            run()  # warm-up: first-call allocations and oneDNN primitive creation
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                times[name].append(timed(run))
        for name, samples in times.items():
            rows.setdefault(name, {})[size] = statistics.median(samples) / BATCH * 1e3

    header = "| per pair (ms) | " + " | ".join(f"{size}x{size}" for size in args.sizes) + " |"
    lines = [
        "# Flow estimators: CPU time per pair",
        "",
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, batch {BATCH}, median of {args.repeats} interleaved repeats; `python experiments/bench_flow.py"
        f"{f' --threads {args.threads}' if args.threads else ''}`.",
        "",
        header,
        "|" + "---|" * (len(args.sizes) + 1),
    ]
    for name, by_size in rows.items():
        lines.append(
            f"| {name} | " + " | ".join(f"{by_size[s]:.1f}" if s in by_size else "-" for s in args.sizes) + " |"
        )
    lines += ["", "flownet2sd (fwd+bwd) is measured up to 128x128 only (minutes per repeat beyond on a small CPU)."]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
