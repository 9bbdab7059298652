"""vad.score's speed, side by side in one run: frames/s of the streaming scorer on a video file (decode in the reader
thread + batched inference + writing scores.csv) vs a batch-1 loop over the same frames (decode, then one clip per
forward pass), and the reader thread alone (decode + resize), for FFP at the CPU preset's size (``ffp_ped2_cpu``:
128x128 grey, width 32, batches of 4: its ``eval_batch_size``), at the 64x64 preset's (``ffp_ped2_cpu64``: width
16) and at the paper's (256x256, width 64, batches of 8). Random weights: speed only.

The video: ``vtest.avi`` of ../shared/data when present (real 768x576 footage), else the suite's synthetic scene
written as an MJPG .avi. Goal on a 2-core CPU: the scorer >= 2x the batch-1 loop at the preset size, and the reader
never the bottleneck (its frames/s far above the scorer's). Each setting is timed in float32 and under bfloat16
autocast (``vad.score precision=bf16-mixed``), with the model as vad.score loads it (channels-last weights, as in
its test); the reference is the batch-1 loop as a user writes it after ``FFP.load_from_checkpoint`` (float32, the
default memory format; the ports run float32), and the ratio to a batch-1 loop in the scorer's own setup (same
precision and memory format) is printed too: the pipeline's share. bf16 speed depends on the CPU (the header names
its bf16 units: with AMX it is several times float32's; without bf16 units, slower).

    python experiments/bench_score.py                    # writes experiments/results/bench_score.md
    python experiments/bench_score.py --frames 60 --paper-frames 12 --no-write
"""

from __future__ import annotations

import argparse
import datetime
import queue
import statistics
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vad import precision as precisions
from vad.data.batches import clips_to_tensor
from vad.data.frames import _to_channels, resize
from vad.inference.scorer import StreamScorer
from vad.inference.sources import END, open_inputs, read_frames
from vad.inference.spec import InputSpec
from vad.methods.ffp import FFP
from vad.reporting.machine import cpu_description

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results" / "bench_score.md"
DISCUSSION = "<!-- discussion: kept by the script -->"
SETTINGS = {
    "preset ffp_ped2_cpu (128x128, width 32, batch 4)": {"size": 128, "features": 32, "batch": 4},
    "ffp_ped2_cpu64 (64x64, width 16, batch 32)": {"size": 64, "features": 16, "batch": 32},
    "paper (256x256, width 64, batch 8)": {"size": 256, "features": 64, "batch": 8},
}


def video(scratch: Path, frames: int) -> tuple[Path, str]:
    """A video file of at least ``frames`` frames: a cut of vtest.avi, or synthetic frames."""
    source = REPO.parent / "shared" / "data" / "vtest.avi"
    out = scratch / "input.avi"
    if source.is_file():
        cap = cv2.VideoCapture(str(source))
        images = []
        while len(images) < frames:
            ok, frame = cap.read()
            if not ok:
                break
            images.append(frame)
        cap.release()
        what = f"vtest.avi, first {len(images)} frames (768x576)"
    else:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (240, 360, 3), dtype=np.uint8) for _ in range(frames)]
        what = f"{frames} random 360x240 frames"
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10, images[0].shape[1::-1])
    for image in images:
        writer.write(image)
    writer.release()
    return out, what


def reader_fps(path: Path, size: int) -> float:
    source = open_inputs(str(path))[0]
    frames: queue.Queue = queue.Queue(maxsize=4096)
    start = time.perf_counter()
    spec = InputSpec(clip_len=5, size=(size, size), channels=1)
    thread = threading.Thread(target=read_frames, args=(source, spec, frames, threading.Event()))
    thread.start()
    count = 0
    while frames.get() is not END:
        count += 1
    return count / (time.perf_counter() - start)


def scorer_fps(model: FFP, path: Path, size: int, batch: int, out: Path, precision: str = "32-true") -> float:
    scorer = StreamScorer(model, InputSpec(clip_len=5, size=(size, size), channels=1), batch_size=batch,
                          threshold=None, calibrated=False, precision=precision)  # fmt: skip
    summary = scorer.run(open_inputs(str(path))[0], out, progress=False)
    return summary.frames / summary.seconds


def batch1_fps(model: FFP, path: Path, size: int, precision: str = "32-true") -> float:
    start = time.perf_counter()
    cap = cv2.VideoCapture(str(path))
    window: list[np.ndarray] = []
    count = 0
    with torch.no_grad(), precisions.autocast(precision, "cpu"):
        while True:
            ok, raw = cap.read()
            if not ok:
                break
            count += 1
            window = [*window[-4:], resize(_to_channels(raw, 1, path), (size, size)).transpose(2, 0, 1)]
            if len(window) == 5:
                model.test_signals({"frames": clips_to_tensor([np.stack(window)])})
    cap.release()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200, help="frames scored at the preset size")
    parser.add_argument("--paper-frames", type=int, default=24, help="frames scored at the paper size")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        for label, setting in SETTINGS.items():
            count = args.frames if setting["size"] <= 128 else args.paper_frames
            path, what = video(_mkdir(scratch, label), count)
            model = FFP(channels=1, clip_len=5, generator={"features": setting["features"]},
                        loss={"intensity": 1.0, "gradient": 1.0}).eval()  # fmt: skip
            read = reader_fps(path, setting["size"])
            # the reference: the batch-1 loop as a user writes it after FFP.load_from_checkpoint (float32, the
            # default memory format); then the scorer in each precision with the model as vad.score loads it
            # (vad.app.build.model_from_checkpoint: the memory format of its test, channels-last for FFP), and the
            # batch-1 loop in that same setup, whose ratio is the pipeline's alone (batching, the reader thread).
            # Interleaved rounds (this machine is shared and noisy): the medians, and each ratio as the median of
            # the ratios within a round
            runs: dict[str, list[float]] = {}
            for round_ in range(args.repeats):
                model.to(memory_format=torch.contiguous_format)
                runs.setdefault("user", []).append(batch1_fps(model, path, setting["size"]))
                model.setup("predict")
                for precision in precisions.PRECISIONS:
                    out = _mkdir(scratch, f"{label}-{precision}-out-{round_}")
                    runs.setdefault(f"score {precision}", []).append(
                        scorer_fps(model, path, setting["size"], setting["batch"], out, precision)
                    )
                    runs.setdefault(f"same {precision}", []).append(batch1_fps(model, path, setting["size"], precision))
            single = statistics.median(runs["user"])
            for precision in precisions.PRECISIONS:
                streamed = runs[f"score {precision}"]
                same = runs[f"same {precision}"]
                to_user = statistics.median(a / b for a, b in zip(streamed, runs["user"], strict=True))
                to_same = statistics.median(a / b for a, b in zip(streamed, same, strict=True))
                row = (label, what, precision, read, statistics.median(streamed), statistics.median(same), single,
                       to_user, to_same)  # fmt: skip
                rows.append(row)
                print(
                    f"{label} {precision}: reader {read:.0f} frames/s; vad.score {row[4]:.1f} frames/s; batch-1 loop"
                    f" {row[5]:.1f} frames/s in the scorer's setup ({single:.1f} as a user writes it); ratio"
                    f" {to_user:.2f}x the user's loop, {to_same:.2f}x the same setup's (rounds: vad.score"
                    f" {_list(streamed)}; user's loop {_list(runs['user'])}; same setup {_list(same)})",
                    flush=True,
                )
    cpu = cpu_description()
    lines = [
        "# vad.score: streaming scorer vs a batch-1 loop (FFP, random weights), side by side in one run",
        "",
        f"{datetime.date.today()}, {cpu}, {torch.get_num_threads()} torch threads, CPU; "
        "`python experiments/bench_score.py`. vad.score = reader thread (decode + resize) + batched inference + "
        "scores.csv, in float32 (`precision=32-true`) and under bfloat16 autocast (`precision=bf16-mixed`), the model "
        "as vad.score loads it (channels-last weights, as in its test); batch-1 loop = the same decoding in the loop, "
        "one clip per forward pass: as a user writes it after `FFP.load_from_checkpoint` (float32, default memory "
        "format: the reference) and in the scorer's own setup (same precision and memory format: the pipeline's "
        f"ratio alone). Medians of {args.repeats} interleaved rounds; each ratio is the median of the ratios within a"
        " round.",
        "",
        "By default vad.score runs a bf16-trained checkpoint in bf16 only where bfloat16 is native, float32 "
        f"elsewhere: {precisions.for_scoring('bf16-mixed', 'cpu')[1] or 'here it scores in bf16-mixed (native)'}.",
        "",
        "| setting | input | precision | reader alone (frames/s) | vad.score (frames/s) | batch-1 loop as a user "
        "writes it (frames/s) | batch-1 loop, the scorer's setup (frames/s) | vad.score / the user's batch-1 loop "
        "| vad.score / batch-1 in its setup |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, what, precision, read, streamed, same, single, to_user, to_same in rows:
        lines.append(
            f"| {label} | {what} | {precision} | {read:.0f} | {streamed:.1f} | {single:.1f} | {same:.1f} "
            f"| {to_user:.2f}x | {to_same:.2f}x |"
        )
    if not args.no_write:
        kept = RESULTS.read_text().partition(DISCUSSION)[2] if RESULTS.is_file() else "\n"
        RESULTS.write_text("\n".join(lines) + f"\n\n{DISCUSSION}{kept}")
        print(f"written: {RESULTS}")


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def _mkdir(scratch: Path, label: str) -> Path:
    folder = scratch / "".join(c if c.isalnum() else "_" for c in label)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


if __name__ == "__main__":
    main()
