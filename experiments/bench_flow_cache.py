"""The flow-target cache, side by side in one run: flows/s of the cache build, and training clips/s with the flows
read from the cache vs computed with OpenCV DIS per batch (what a method would do without the cache).

Data: the real Ped2 training videos when ``../shared/data/ped2`` (or ``--root``) exists, else the suite's synthetic
scene; grey frames at ``--size`` (64 and 256 by default). For each size:

1. the cache build from a built frame cache: flows/s with 1 thread and with ``--workers`` threads (the entry is
   deleted before each timing);
2. training batches (clip_len 5, batch 8, random order) for ``--batches`` batches: (a) clips + flows from the cache,
   (b) clips without flows + DIS on the clip's 4 consecutive pairs per item in the loop; median of interleaved
   repeats, clips/s and the ratio (a)/(b).

    python experiments/bench_flow_cache.py
    python experiments/bench_flow_cache.py --sizes 64 --batches 50 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vad.data.batches import collate_clips, frames_to_float
from vad.data.cache import FrameCache
from vad.data.clips import ClipDataset
from vad.data.flows import FlowCache
from vad.data.layout import open_dataset
from vad.data.synthetic import generate
from vad.flow import DISFlow

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results" / "bench_flow_cache.md"
CLIP_LEN, BATCH = 5, 8


def videos(root: Path | None, scratch: Path) -> tuple[str, list]:
    default = REPO.parent / "shared" / "data" / "ped2"
    root = root or (default if default.is_dir() else None)
    if root is not None and root.is_dir():
        return f"ped2 training ({root})", open_dataset("ped2", root).train
    synthetic = scratch / "synthetic"
    generate(synthetic, seed=0, num_train=4, num_test=1, frames_per_video=120)
    return "synthetic training (4 videos x 120 frames)", open_dataset("synthetic", synthetic, layout="ffp").train


def time_build(flows: FlowCache, train: list, workers: int) -> float:
    flows.workers = workers
    folder = flows.path(train[0], "bench").parent
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    flows.build(train, "bench", progress=False)
    return time.perf_counter() - start


def batches(dataset: ClipDataset, count: int, seed: int) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(len(dataset))[: count * BATCH]
    return [order[i : i + BATCH].tolist() for i in range(0, len(order), BATCH)]


def cached_loop(dataset: ClipDataset, plan: list[list[int]]) -> float:
    start = time.perf_counter()
    for indices in plan:
        batch = collate_clips(dataset.__getitems__(indices))
        assert batch["flows"].shape[1] == CLIP_LEN - 1
    return time.perf_counter() - start


def per_batch_loop(dataset: ClipDataset, plan: list[list[int]], dis: DISFlow) -> float:
    start = time.perf_counter()
    for indices in plan:
        frames = frames_to_float(collate_clips(dataset.__getitems__(indices))["frames"])
        a, b = frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1)
        flows = dis(a, b).unflatten(0, (frames.shape[0], CLIP_LEN - 1))
        assert flows.shape[1] == CLIP_LEN - 1
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; do not write the results file")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        source, train = videos(args.root, Path(scratch))
        pairs = sum(v.num_frames - 1 for v in train)
        for size in args.sizes:
            frames = FrameCache(Path(scratch) / "cache", (size, size), channels=1)
            frames.build(train, "bench", progress=False)
            dis = DISFlow()
            flows = FlowCache(frames, dis)
            one = time_build(flows, train, 1)
            many = time_build(flows, train, args.workers)
            with_flows = ClipDataset(train, frames, "bench", clip_len=CLIP_LEN)
            with_flows.attach_flows(flows, "bench")
            plain = ClipDataset(train, frames, "bench", clip_len=CLIP_LEN)
            cached, computed = [], []
            for repeat in range(args.repeats):
                plan = batches(plain, args.batches, seed=repeat)
                cached.append(cached_loop(with_flows, plan))
                computed.append(per_batch_loop(plain, plan, dis))
            clips = args.batches * BATCH
            row = {
                "size": size,
                "build_1": pairs / one,
                "build_n": pairs / many,
                "cached": clips / statistics.median(cached),
                "computed": clips / statistics.median(computed),
            }
            rows.append(row)
            print(
                f"{size}x{size}: build {row['build_1']:.0f} flows/s (1 thread), {row['build_n']:.0f} flows/s "
                f"({args.workers} threads); training clips/s: cache {row['cached']:.0f}, DIS per batch "
                f"{row['computed']:.0f}, ratio {row['cached'] / row['computed']:.1f}x"
            )
    lines = [
        "# Flow-target cache: build speed, and training clips/s with cached flows vs DIS per batch",
        "",
        f"{datetime.date.today()}, {platform.machine()}, {torch.get_num_threads()} torch threads, {source}, "
        f"{pairs} frame pairs, grey; clip_len {CLIP_LEN}, batch {BATCH}, {args.batches} batches, median of "
        f"{args.repeats} interleaved repeats; `python experiments/bench_flow_cache.py`.",
        "",
        f"| size | build, 1 thread (flows/s) | build, {args.workers} threads (flows/s) | clips/s, cached flows | "
        "clips/s, DIS per batch | cached / per batch |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']}x{r['size']} | {r['build_1']:.0f} | {r['build_n']:.0f} | {r['cached']:.0f} | "
            f"{r['computed']:.0f} | {r['cached'] / r['computed']:.1f}x |"
        )
    if not args.no_write:
        RESULTS.write_text("\n".join(lines) + "\n")
        print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
