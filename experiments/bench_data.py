"""Training-clip throughput: the frame-cache datamodule against per-sample JPEG decoding and bare memmap slicing.

Measures, side by side in one run and for each channel setting (grey, as Ped1/Ped2 are configured, and RGB), training
clips per second of

    (a) VideoDataModule.train_dataloader()  (cache built beforehand; its build time is reported separately): the
        uint8 batches it ships, which the method converts to float32 in [-1, 1] on its device
    (a+f) the batches of (a) converted by that conversion (vad.data.batches.frames_to_float), here on the CPU: the
        loader plus the device-side conversion, as a CPU training pays it (on a GPU the conversion runs on the GPU)
    (b) a DataLoader whose dataset decodes (cv2.imread, grey or colour) and resizes the clip_len frame files of every
        sample and converts each to float32 in [-1, 1], as the reference ports do; same batch size, workers and
        shuffling
    (c) bare memory-map slicing: random clip starts sliced from the cached arrays into one uint8 batch buffer (the
        items of (a)), in a plain loop (no Dataset, no DataLoader)
    (d) as (c), converted into one float32 batch buffer on the host (vad.data.batches.clips_to_tensor: the float items
        the loader shipped before the conversion moved to the device; for reference)

Goals: (a) >= 20x (b) and (a) >= 0.8x (c); (a+f) / (b) is reported beside (a) / (b). Rounds are interleaved (every
method of every channel setting, then again): the methods of one round run within seconds of each other, under about
the same load from the other users of a shared machine, so each ratio is the median over rounds of that round's
ratio; tables hold median rates. The load average is recorded before and after. Results go to
experiments/results/bench_data.md.

    python experiments/bench_data.py                          # the real Ped2 copy if present, else synthetic data
    python experiments/bench_data.py --root ../shared/data/ped2 --channels 1 --seconds 5 --rounds 3
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

from vad.data.batches import clip_to_tensor, clips_to_tensor, collate_clips, frames_to_float
from vad.data.catalog import KNOWN_DATASETS
from vad.data.clips import ClipDataset
from vad.data.datamodule import VideoDataModule
from vad.data.frames import resize

REPO = Path(__file__).resolve().parents[1]
SHARED_PED2 = Path(os.environ.get("VAD_SHARED_DATA", REPO.parent / "shared" / "data")) / "ped2"
RESULTS = REPO / "experiments" / "results" / "bench_data.md"
GOAL_JPEG, GOAL_BARE = 20.0, 0.8
LABELS = {
    "a": "(a) VideoDataModule train loader (uint8 batches)",
    "af": "(a+f) (a) + float conversion on the device (CPU here)",
    "b": "(b) per-sample JPEG decode + resize + float",
    "c": "(c) bare memmap slicing, uint8",
    "d": "(d) bare memmap slicing + host float conversion",
}


class JpegClips(Dataset):
    """The same clips as a ClipDataset, but every sample decodes and resizes its frame files (no cache).

    Decodes with cv2.imread straight to grey (IMREAD_GRAYSCALE decodes only the luma of a JPEG, the cheapest way to
    a grey frame) or to BGR, reordered to RGB while the clip is made planar, then converts it to float32 in [-1, 1]
    per sample as the reference ports do (the values frames_to_float gives).
    """

    def __init__(self, clips: ClipDataset, size: tuple[int, int], channels: int) -> None:
        self.clips = clips
        self.size = size
        self.channels = channels
        self.flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR

    def __len__(self) -> int:
        return len(self.clips)

    def _decode(self, path: Path) -> np.ndarray:
        frame = cv2.imread(str(path), self.flag)
        return frame[:, :, None] if frame.ndim == 2 else frame

    def __getitem__(self, i: int) -> dict:
        video_id, start = self.clips.locate(i)
        files = self.clips.videos[video_id].source.images[start : start + self.clips.span : self.clips.frame_stride]
        clip = np.stack([resize(self._decode(path), self.size) for path in files])  # (T, H, W, C)
        planar = clip.transpose(0, 3, 1, 2) if self.channels == 1 else clip.transpose(0, 3, 1, 2)[:, ::-1]
        frames = clip_to_tensor(np.ascontiguousarray(planar))
        return {"frames": frames, "video_id": video_id, "index": start + self.clips.span - 1}


def bare_memmap_batches(clips: ClipDataset, batch_size: int, seed: int, as_float: bool) -> Iterator[torch.Tensor]:
    """Endless batches of random clips sliced straight from the cached arrays (no Dataset, no DataLoader).

    ``as_float``: converted on the host (float32 (B, T, C, H, W) in [-1, 1]); else uint8 (B, T, C, H, W), the
    datasets' items.
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
        yield clips_to_tensor(batch) if as_float else torch.from_numpy(np.stack(batch))


def endless(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def converted(batches: Iterator[dict]) -> Iterator[torch.Tensor]:
    """The frames of each batch converted as the method does on its device (here the CPU)."""
    for batch in batches:
        yield frames_to_float(batch["frames"])


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


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="dataset root (default: real Ped2, else synthetic)")
    parser.add_argument("--name", default=None, help="dataset name for the reader (default: from the root)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds of measurements")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 3], choices=(1, 3))
    parser.add_argument("--clip-len", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of (a) and (b)")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads of this process")
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


def methods_for(args: argparse.Namespace, root: Path, name: str, channels: int, scratch: Path) -> tuple[dict, dict]:
    """The batch sources of one channel setting, and facts about its cache build."""
    size = (args.size[0], args.size[1])
    dm = VideoDataModule(
        name,
        root,
        image_size=size,
        channels=channels,
        clip_len=args.clip_len,
        batch_size=args.batch_size,
        num_workers=args.workers,
        cache_dir=scratch / "cache",
    )
    t0 = time.perf_counter()
    dm.setup("fit")  # builds the training videos' cache entries: nothing cached yet in the scratch folder
    build_s = time.perf_counter() - t0
    train = dm.train_dataset
    for v in range(len(train.videos)):
        train.frames(v).max()  # map every page once: measure the steady state, not the first epoch's page faults
    facts = {"build_s": build_s, "frames": sum(train.num_frames), "videos": len(train.videos), "clips": len(train)}
    jpeg_loader = DataLoader(
        JpegClips(train, size, channels),
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        num_workers=args.workers,
        collate_fn=collate_clips,
    )
    methods: dict[str, Callable[[], Iterator]] = {
        "a": lambda: endless(dm.train_dataloader()),
        "af": lambda: converted(endless(dm.train_dataloader())),
        "b": lambda: endless(jpeg_loader),
        "c": lambda: bare_memmap_batches(train, args.batch_size, 0, as_float=False),
        "d": lambda: bare_memmap_batches(train, args.batch_size, 0, as_float=True),
    }
    return methods, facts


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # One thread, as in every DataLoader worker (torch sets 1 there). With torch's default pool of one thread per
    # core, (b)'s torch.stack of each batch took 10x longer whenever other processes kept the shared cores busy
    # (its threads wait for each other), which measured the machine's load rather than the loaders.
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    channel_settings = list(dict.fromkeys(args.channels))
    load_before = load_average()
    print(f"load average (1 / 5 / 15 min) before: {load_before}")
    with tempfile.TemporaryDirectory(prefix="vad-bench-") as scratch:
        root, name, described = dataset_root(args, Path(scratch))
        methods, facts = {}, {}
        for channels in channel_settings:
            methods[channels], facts[channels] = methods_for(args, root, name, channels, Path(scratch))
            f = facts[channels]
            print(
                f"{described}, {channels} channel(s): {f['videos']} training videos, {f['frames']} frames, "
                f"{f['clips']} clips; cache build {f['build_s']:.1f} s ({f['frames'] / f['build_s']:.0f} frames/s)"
            )
        runs = {c: {key: [] for key in LABELS} for c in channel_settings}
        for round_ in range(args.rounds):
            for channels in channel_settings:
                for key, make in methods[channels].items():
                    wall, cpu = clips_per_second(make(), args.batch_size, args.seconds)
                    runs[channels][key].append((wall, cpu))
                    print(
                        f"  {round_ + 1}/{args.rounds}  c{channels}  {LABELS[key]:<54} {wall:8.1f} clips/s "
                        f"({cpu:.1f} per CPU s)",
                        flush=True,
                    )
    load_after = load_average()
    print(f"load average (1 / 5 / 15 min) after: {load_after}")
    for channels in channel_settings:
        print(
            f"c{channels}: (a)/(b) = {ratio(runs[channels], 'b'):.1f}x (goal >= {GOAL_JPEG:g}x)    "
            f"(a+f)/(b) = {ratio(runs[channels], 'b', of='af'):.1f}x    "
            f"(a)/(c) = {ratio(runs[channels], 'c'):.2f}x (goal >= {GOAL_BARE:g}x)"
        )
    write_table(args, described, facts, runs, (load_before, load_after))
    print(f"wrote {args.out}")


def medians(rates: dict[str, list[tuple[float, float]]]) -> tuple[dict[str, float], dict[str, float]]:
    """(wall, cpu) clips/s medians over rounds, per method."""
    wall = {key: statistics.median(r[0] for r in runs) for key, runs in rates.items()}
    cpu = {key: statistics.median(r[1] for r in runs) for key, runs in rates.items()}
    return wall, cpu


def ratio(rates: dict[str, list[tuple[float, float]]], other: str, cpu: bool = False, of: str = "a") -> float:
    """Median over rounds of ``of``'s rate over ``other``'s in the same round (wall clock, or per CPU second)."""
    column = 1 if cpu else 0
    return statistics.median(a[column] / o[column] for a, o in zip(rates[of], rates[other], strict=True))


def verdict(ratio: float, goal: float) -> str:
    return "meets the goal" if ratio >= goal else "misses the goal"


def write_table(
    args: argparse.Namespace,
    described: str,
    facts: dict[int, dict],
    runs: dict[int, dict[str, list[tuple[float, float]]]],
    loads: tuple[str, str],
) -> None:
    h, w = args.size
    lines = [
        "# Training-clip throughput of the data pipeline",
        "",
        f"Generated by `python {' '.join(['experiments/bench_data.py', *sys.argv[1:]])}` on "
        f"{datetime.date.today().isoformat()}.",
        "",
        f"- Machine: {machine()}, shared with other users (load average 1 / 5 / 15 min before the run {loads[0]}, "
        f"after {loads[1]}); torch {torch.__version__}, numpy {np.__version__}, OpenCV {cv2.__version__}, "
        f"Python {platform.python_version()}; {args.threads} torch and OpenCV thread(s) (`--threads`)",
        f"- Data: {described}; training split",
        f"- Clips: {h}x{w}, clip_len {args.clip_len}, stride 1, batch {args.batch_size}, {args.workers} DataLoader "
        "workers in (a) and (b); the loader's items uint8 (T, C, H, W), converted to float32 in [-1, 1] by the method "
        "on its device ((a+f): that conversion on this CPU); (b)'s items float32, converted per sample",
        f"- {args.rounds} interleaved rounds of {args.seconds:g} s per method; median rates shown, every round "
        "listed; each ratio is the median over rounds of the ratio within a round (the methods of a round run within "
        "seconds of each other). Clips per CPU second (this process, all its threads) is less sensitive to other "
        "load on a shared machine",
        "",
    ]
    sections, summary = [], []
    for channels, rates in runs.items():
        f = facts[channels]
        wall, cpu = medians(rates)
        kind = "RGB" if channels == 3 else "grey"
        sections += [
            f"## {channels} channel{'s' if channels > 1 else ''} ({kind})",
            "",
            f"{f['videos']} training videos, {f['frames']} frames, {f['clips']} clips. Frame cache build (decode + "
            f"resize + write): {f['build_s']:.1f} s, {f['frames'] / f['build_s']:.0f} frames/s, apart from (a).",
            "",
            "| loader | clips/s (median) | clips per CPU s (median) | clips/s of each round |",
            "|---|---:|---:|---|",
        ]
        for key, label in LABELS.items():
            shown = ", ".join(f"{r[0]:.1f}" for r in rates[key])
            sections.append(f"| {label} | {wall[key]:.1f} | {cpu[key]:.1f} | {shown} |")
        jpeg, bare, with_float = ratio(rates, "b"), ratio(rates, "c"), ratio(rates, "b", of="af")
        sections += [
            "",
            f"(a)/(b) = **{jpeg:.1f}x** (goal >= {GOAL_JPEG:g}x; per CPU second {ratio(rates, 'b', cpu=True):.1f}x); "
            f"with the float conversion on the device, here the CPU, (a+f)/(b) = **{with_float:.1f}x** (per CPU "
            f"second {ratio(rates, 'b', cpu=True, of='af'):.1f}x); "
            f"(a)/(c) = **{bare:.2f}x** (goal >= {GOAL_BARE:g}x; per CPU second {ratio(rates, 'c', cpu=True):.2f}x). "
            f"Bare slicing to the same uint8 items, (c), bounds (a): it is {ratio(rates, 'b', of='c'):.1f}x (b). "
            f"The conversion is {1 - wall['af'] / wall['a']:.0%} of (a+f)'s time per clip ((a) against (a+f)) and "
            f"{1 - wall['d'] / wall['c']:.0%} of (d)'s ((c) against (d)); bare slicing converted on the host, (d), "
            f"is {ratio(rates, 'b', of='d'):.1f}x (b).",
            "",
        ]
        summary.append(
            f"- {channels} channel{'s' if channels > 1 else ''} ({kind}): {jpeg:.1f}x the per-clip JPEG loader "
            f"{verdict(jpeg, GOAL_JPEG)} of {GOAL_JPEG:g}x ({with_float:.1f}x with the float conversion on this CPU); "
            f"{bare:.2f}x bare slicing {verdict(bare, GOAL_BARE)} of {GOAL_BARE:g}x."
        )
    lines += ["## Goals", "", *summary, "", *sections]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
