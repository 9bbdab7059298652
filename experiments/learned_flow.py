"""flow=learned on a real dataset: training time, and its flow on held-out frame pairs next to DIS, LK and zero.

    python experiments/learned_flow.py --data <folder holding ped2/> [--size 64 64]

Trains ``flow=learned`` with its default settings on Ped2's normal training frames at the working size (grey, the
CPU presets' format; the cache under a scratch ``paths.weights_dir``), then measures on the held-out pairs (the last
10% of each training video's pairs, never trained on): the end-point error against DIS (the distillation target),
and the photometric error of the second frame warped back by each flow -- the learned net, the weight-free
Lucas-Kanade (``flow=lk``), DIS itself and a zero flow. Writes ``experiments/results/learned_flow.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vad import config_dir
from vad.flow import build_flow
from vad.flow.learned import LearnedFlow, flow_pairs, held_out_errors

RESULTS = Path(__file__).resolve().parent / "results" / "learned_flow.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder holding ped2/")
    parser.add_argument("--size", type=int, nargs=2, default=[64, 64])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    size = f"[{args.size[0]},{args.size[1]}]"
    with tempfile.TemporaryDirectory() as scratch, initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["dataset=ped2", f"dataset.image_size={size}", "dataset.channels=1",
                                          f"paths.data_dir={args.data.resolve()}", f"paths.weights_dir={scratch}",
                                          "flow=learned"])  # fmt: skip
        dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
        node = OmegaConf.to_container(cfg.flow, resolve=True)
        start = time.perf_counter()
        learned = build_flow(cfg.flow)
        assert isinstance(learned, LearnedFlow)
        total = time.perf_counter() - start
        pairs = flow_pairs(dataset, node["targets"], node["holdout"])
        lk = build_flow("lk")
        rows = {"learned (flow=learned)": held_out_errors(pairs, learned), "Lucas-Kanade (flow=lk)": held_out_errors(
            pairs, lambda a, b: lk(a, b)), "zero flow": held_out_errors(pairs, None)}  # fmt: skip
    report = learned.report
    dis = rows["zero flow"]["photometric_dis"]
    lines = [
        "# flow=learned on UCSD Ped2: held-out end-point and photometric errors",
        "",
        f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
        f"`python experiments/learned_flow.py --data ... --size {args.size[0]} {args.size[1]}`. Ped2 training videos "
        f"at {args.size[0]}x{args.size[1]} grey; {report['pairs']} training pairs, {report['held_out_pairs']} held "
        f"out (the last 10% of each video's pairs). Defaults of conf/flow/learned.yaml ({report['steps']} steps). "
        f"Training {report['seconds']:.0f} s; with caching the frames and the DIS targets {total:.0f} s.",
        "",
        "| flow | EPE vs DIS (px) | photometric error: mean abs(b(x + f) - a) |",
        "|---|---:|---:|",
    ]
    for name, errors in rows.items():
        lines.append(f"| {name} | {errors['epe']:.4f} | {errors['photometric']:.5f} |")
    lines.append(f"| DIS (the target) | 0 | {dis:.5f} |")
    lines += [
        "",
        "Photometric error in the frames' [-1, 1] units, mean over pixels and pairs.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
