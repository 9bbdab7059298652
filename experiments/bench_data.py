"""Training-clip throughput: the frame-cache datamodule against per-sample JPEG decoding and bare memmap slicing.

Measures, side by side in one run, training clips per second of

    (a) VideoDataModule.train_dataloader()  (cache built beforehand; its build time is reported separately)
    (b) a DataLoader whose dataset reads and resizes the clip_len frame files of every sample (as the reference
        ports do), with the same batch size, workers, shuffling and float conversion
    (c) bare memory-map slicing: random clip starts sliced from the cached arrays, converted and stacked in a loop
    (d) as (c) but without the float conversion: the uint8 batches a loader would ship if the conversion to
        [-1, 1] ran on the GPU after the transfer (for reference; not what the datamodule does)

Repeats are interleaved (a, b, c, a, b, c, ...) so that a noisy, shared machine hurts all three alike; the table
holds the median over repeats. Results go to experiments/results/bench_data.md.

    python experiments/bench_data.py                          # the real Ped2 copy if present, else synthetic data
    python experiments/bench_data.py --root ../shared/data/ped2 --seconds 5 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vad.data.clips import ClipDataset, clip_to_tensor, clips_to_tensor, collate_clips
from vad.data.datamodule import VideoDataModule
from vad.data.frames import read_image, resize
from vad.data.layout import KNOWN_DATASETS

REPO = Path(__file__).resolve().parents[1]
SHARED_PED2 = Path(os.environ.get("VAD_SHARED_DATA", REPO.parent / "shared" / "data")) / "ped2"
RESULTS = REPO / "experiments" / "results" / "bench_data.md"


class JpegClips(Dataset):
    """The same clips as a ClipDataset, but every sample decodes and resizes its frame files (no cache)."""

    def __init__(self, clips: ClipDataset, size: tuple[int, int], channels: int) -> None:
        self.clips = clips
        self.size = size
        self.channels = channels

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        video_id, start = self.clips.locate(i)
        files = self.clips.videos[video_id].source.images[start : start + self.clips.span : self.clips.frame_stride]
        clip = np.stack([resize(read_image(path, self.channels), self.size) for path in files])
        return {"frames": clip_to_tensor(clip), "video_id": video_id, "index": start + self.clips.span - 1}


def bare_memmap_batches(clips: ClipDataset, batch_size: int, seed: int, as_float: bool) -> Iterator[torch.Tensor]:
    """Endless batches of random clips sliced straight from the cached arrays (no Dataset, no DataLoader).

    ``as_float``: the datasets' float conversion (float32 (B, T, C, H, W) in [-1, 1]); else a uint8 (B, T, C, H, W)
    view of channels-last frames, what a loader would ship if the conversion ran on the GPU after the transfer.
    """
    rng = np.random.default_rng(seed)
    arrays = [clips.frames(v) for v in range(len(clips.videos))]
    usable = [v for v, n in enumerate(clips.clips_per_video) if n > 0]
    while True:
        batch = []
        for _ in range(batch_size):
            v = usable[rng.integers(len(usable))]
            start = int(rng.integers(clips.clips_per_video[v]))
            batch.append(arrays[v][start : start + clips.span : clips.frame_stride])
        yield clips_to_tensor(batch) if as_float else torch.from_numpy(np.stack(batch).transpose(0, 1, 4, 2, 3))


def endless(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def clips_per_second(batches: Iterator, batch_size: int, seconds: float) -> tuple[float, float]:
    """Clips per wall-clock second and per CPU second of this process, drawn from ``batches`` for ``seconds``."""
    next(batches)  # warm-up: first page faults, worker start
    count = 0
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        next(batches)
        count += batch_size
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return f"{cpu}, {os.cpu_count()} logical cores visible, {platform.system()} {platform.release()}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="dataset root (default: real Ped2, else synthetic)")
    parser.add_argument("--name", default=None, help="dataset name for the reader (default: from the root)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each measurement")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--clip-len", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of (a) and (b)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def dataset_root(args: argparse.Namespace, scratch: Path) -> tuple[Path, str, str]:
    """(root, reader name, description) of the data to measure on."""
    if args.root is not None:
        name = args.name or (args.root.name if args.root.name in KNOWN_DATASETS else "folder")
        return args.root, name, str(args.root)
    if SHARED_PED2.is_dir():
        return SHARED_PED2, "ped2", f"real UCSD Ped2 ({SHARED_PED2})"
    from vad.data.synthetic import generate

    root = generate(scratch / "synthetic", seed=0)
    return root, "synthetic", "synthetic set (vad.data.synthetic, seed 0, defaults), generated for this run"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    size = (args.size[0], args.size[1])
    with tempfile.TemporaryDirectory(prefix="vad-bench-") as scratch:
        root, name, described = dataset_root(args, Path(scratch))
        dm = VideoDataModule(
            name,
            root,
            image_size=size,
            channels=args.channels,
            clip_len=args.clip_len,
            batch_size=args.batch_size,
            num_workers=args.workers,
            cache_dir=Path(scratch) / "cache",
        )
        t0 = time.perf_counter()
        dm.setup("fit")  # builds the training videos' cache entries: nothing cached yet in the scratch folder
        build_s = time.perf_counter() - t0
        train = dm.train_dataset
        frames = sum(train.num_frames)
        print(f"{described}: {len(train.videos)} training videos, {frames} frames, {len(train)} clips")
        print(f"cache build: {build_s:.1f} s ({frames / build_s:.0f} frames/s)")

        jpeg_loader = DataLoader(
            JpegClips(train, size, args.channels),
            batch_size=args.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
            num_workers=args.workers,
            collate_fn=collate_clips,
        )
        methods: dict[str, Callable[[], Iterator]] = {
            "(a) VideoDataModule train loader": lambda: endless(dm.train_dataloader()),
            "(b) per-sample JPEG decode + resize": lambda: endless(jpeg_loader),
            "(c) bare memmap slicing": lambda: bare_memmap_batches(train, args.batch_size, 0, as_float=True),
            "(d) bare memmap slicing, uint8 (no float conversion)": lambda: bare_memmap_batches(
                train, args.batch_size, 0, as_float=False
            ),
        }
        runs: dict[str, list[tuple[float, float]]] = {label: [] for label in methods}
        for repeat in range(args.repeats):
            for label, make in methods.items():
                wall, cpu = clips_per_second(make(), args.batch_size, args.seconds)
                runs[label].append((wall, cpu))
                print(
                    f"  {repeat + 1}/{args.repeats}  {label:<52} {wall:8.1f} clips/s ({cpu:.1f} per CPU s)", flush=True
                )

    wall = {label: statistics.median(r[0] for r in rates) for label, rates in runs.items()}
    cpu = {label: statistics.median(r[1] for r in rates) for label, rates in runs.items()}
    a, b, c, _ = wall.values()
    print(f"(a)/(b) = {a / b:.1f}x (goal >= 20x)    (a)/(c) = {a / c:.2f}x (goal >= 0.8x)")
    write_table(args, described, build_s, frames, runs, wall, cpu)
    print(f"wrote {args.out}")


def write_table(
    args: argparse.Namespace,
    described: str,
    build_s: float,
    frames: int,
    runs: dict[str, list[tuple[float, float]]],
    wall: dict[str, float],
    cpu: dict[str, float],
) -> None:
    a, b, c, d = wall.values()
    ca, cb, cc, _ = cpu.values()
    h, w = args.size
    lines = [
        "# Training-clip throughput of the data pipeline",
        "",
        f"Generated by `python {' '.join(['experiments/bench_data.py', *sys.argv[1:]])}` on "
        f"{datetime.date.today().isoformat()}.",
        "",
        f"- Machine: {machine()}; torch {torch.__version__} ({torch.get_num_threads()} intra-op threads), "
        f"numpy {np.__version__}, OpenCV {cv2.__version__}, Python {platform.python_version()}",
        f"- Data: {described}; training split, {frames} frames",
        f"- Clips: {h}x{w}, {args.channels} channels ({'RGB' if args.channels == 3 else 'grey'}), clip_len "
        f"{args.clip_len}, stride 1, batch {args.batch_size}, {args.workers} DataLoader workers in (a) and (b); "
        "float32 in [-1, 1]",
        f"- Frame cache build (decode + resize + write, training videos): {build_s:.1f} s, {frames / build_s:.0f} "
        "frames/s, reported apart from (a)",
        f"- {args.repeats} interleaved repeats of {args.seconds:g} s each; medians shown, all repeats listed. "
        "Clips per CPU second (this process, all its threads) is less sensitive to other load on a shared machine",
        "",
        "| loader | clips/s (median) | clips per CPU s (median) | clips/s of each repeat |",
        "|---|---:|---:|---|",
    ]
    for label, rates in runs.items():
        shown = ", ".join(f"{r[0]:.1f}" for r in rates)
        lines.append(f"| {label} | {wall[label]:.1f} | {cpu[label]:.1f} | {shown} |")
    lines += [
        "",
        f"(a)/(b) = **{a / b:.1f}x** (goal >= 20x; per CPU second {ca / cb:.1f}x); "
        f"(a)/(c) = **{a / c:.2f}x** (goal >= 0.8x; per CPU second {ca / cc:.2f}x).",
        "",
        f"(c) bounds (a): slicing the cache costs little, the conversion to float32 [-1, 1] (a 4x larger array "
        f"written per clip) is most of it. Shipping uint8 and converting on the GPU, (d), would be {d / b:.0f}x (b).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
