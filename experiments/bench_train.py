"""Training-step and evaluation throughput of FFP, measured side by side in one run.

Prints (and writes to experiments/results/bench_train.md):

1. Achieved GFLOP/s of the FFP G+D training step (generator forward/backward with every weighted loss term, the
   flow estimator twice, the discriminator step) relative to a bare U-Net forward+backward+Adam step of the same
   size. FLOPs are counted with ``torch.utils.flop_counter`` (convolutions and matrix products) on one step of each.
   Goal >= 0.8: the GAN/flow machinery must not starve the arithmetic units.
2. The Lightning training step (``vad.methods.ffp.FFP`` under a real ``lightning.Trainer``) against the same G and D
   steps written as a plain PyTorch loop. Goal <= 1.1x the time.
3. Evaluation frames/s of the suite's batched test loop (``Trainer.test`` over the frame cache) against a batch-1 loop
   as the reference code runs it (decode the t+1 JPEGs of each frame, resize, one forward per frame). Goal >= 5x.

Repeats are interleaved so a noisy, shared machine hurts both sides alike; medians are reported.

    python experiments/bench_train.py                         # CPU-sized (64x64, width 32) on the real Ped2 copy
    python experiments/bench_train.py --features 16 --batch 8 --flow none   # as experiment=ffp_ped2_cpu
    python experiments/bench_train.py --size 256 --features 64 --device cuda --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from vad import losses
from vad.data.datamodule import VideoDataModule
from vad.data.frames import read_image, resize
from vad.flow import LucasKanade
from vad.methods.ffp import FFP
from vad.nets import UNet

REPO = Path(__file__).resolve().parents[1]
SHARED_PED2 = Path(os.environ.get("VAD_SHARED_DATA", REPO.parent / "shared" / "data")) / "ped2"
RESULTS = REPO / "experiments" / "results" / "bench_train.md"
GOALS = {"flops": 0.8, "lightning": 1.1, "eval": 5.0}


def make_model(args: argparse.Namespace) -> FFP:
    torch.manual_seed(0)
    return FFP(
        channels=args.channels,
        clip_len=5,
        generator={"features": args.features, "depth": 4},
        discriminator={"features": [2 * args.features, 4 * args.features, 8 * args.features, 8 * args.features]},
        loss={"intensity": 1.0, "gradient": 1.0, "flow": 2.0 if args.flow == "lk" else 0.0, "adversarial": 0.05},
        optim={"lr_g": 1e-4, "lr_d": 1e-5, "milestones": [10**9]},
        frozen={"flow": LucasKanade() if args.flow == "lk" else None},
    )


class RandomClips(Dataset):
    """Fixed random clips (N, 5, C, H, W) in [-1, 1], items shaped like the datamodule's."""

    def __init__(self, n: int, channels: int, size: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.frames = torch.rand(n, 5, channels, size, size, generator=g) * 2 - 1

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict:
        return {"frames": self.frames[i], "video": "0", "video_id": 0, "index": i, "label": 0}


class PlainFFP:
    """The FFP training step as a plain PyTorch loop: the same nets, losses and order as the LightningModule."""

    def __init__(self, model: FFP, device: torch.device, autocast: bool) -> None:
        self.model = model.to(device)
        self.opt_g = torch.optim.Adam(model.generator.parameters(), lr=1e-4, betas=(0.9, 0.999))
        self.opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=1e-5, betas=(0.9, 0.999))
        self.device, self.autocast = device, autocast

    def step(self, frames: torch.Tensor) -> None:
        m = self.model
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            clip = m.split_clip(frames)
            target = clip.target
            m.discriminator.requires_grad_(False)
            prediction = m.forward_clip(clip)
            loss_g = m.weighted_sum(m.all_generator_terms(prediction, clip))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        m.discriminator.requires_grad_(True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            fake = prediction.frame.detach()
            loss_d = losses.lsgan_discriminator_loss(m.discriminator(target), m.discriminator(fake))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()


class BareUNet:
    """Forward + backward + Adam step of the generator alone (intensity loss only): the arithmetic reference."""

    def __init__(self, args: argparse.Namespace, device: torch.device, autocast: bool) -> None:
        torch.manual_seed(0)
        self.net = UNet(4 * args.channels, args.channels, features=args.features, depth=4).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4)
        self.device, self.autocast = device, autocast

    def step(self, frames: torch.Tensor) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            prediction = self.net(frames[:, :-1].flatten(1, 2))
            loss = losses.intensity_loss(prediction, frames[:, -1])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_step(step, batches: list[torch.Tensor], device: torch.device) -> float:
    step(batches[0])  # warm-up
    sync(device)
    start = time.perf_counter()
    for frames in batches[1:]:
        step(frames)
    sync(device)
    return (time.perf_counter() - start) / (len(batches) - 1)


def count_flops(step, frames: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        step(frames)
    return counter.get_total_flops()


class StepTimer(L.Callback):
    """Wall time of every training batch (step start to step end), as the Trainer runs it."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times, self._start = device, [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        sync(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sync(self.device)
        self.times.append(time.perf_counter() - self._start)


def lightning_seconds_per_step(args: argparse.Namespace, model: FFP, data: RandomClips) -> float:
    timer = StepTimer(torch.device(args.device))
    trainer = L.Trainer(
        max_steps=args.steps,
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, DataLoader(data, batch_size=args.batch, shuffle=False))
    return statistics.mean(timer.times[1:])


def reference_eval_fps(model: FFP, args: argparse.Namespace, root: Path, frames: int) -> float:
    """Batch-1 loop as the reference code tests: per frame, decode + resize the 5 JPEGs, one forward, PSNR."""
    device = torch.device(args.device)
    videos = sorted(p for p in (root / "testing" / "frames").iterdir() if p.is_dir())
    model = model.to(device).eval()
    done = 0
    start = time.perf_counter()
    with torch.no_grad():
        for video in videos:
            files = sorted(video.iterdir())
            for target in range(4, len(files)):
                clip = [
                    resize(read_image(f, args.channels), (args.size, args.size)) for f in files[target - 4 : target + 1]
                ]
                x = torch.from_numpy(np.stack(clip)).permute(0, 3, 1, 2).float().div(127.5).sub(1)[None].to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed"):
                    prediction = model.predict({"frames": x})
                float(losses.psnr(prediction.float(), x[:, -1]).item())
                done += 1
                if done >= frames:
                    return done / (time.perf_counter() - start)
    return done / (time.perf_counter() - start)


def suite_eval_fps(model: FFP, args: argparse.Namespace, datamodule: VideoDataModule) -> float:
    trainer = L.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.test(model, datamodule=datamodule, verbose=False)
    return model.test_result.n_frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--steps", type=int, default=12, help="training steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--flow",
        choices=("lk", "none"),
        default="lk",
        help="flow term with the Lucas-Kanade estimator (its warps and elementwise solves are not counted as FLOPs), "
        "or none (as in experiment=ffp_ped2_cpu)",
    )
    parser.add_argument("--eval-batch", type=int, default=32)
    parser.add_argument("--eval-frames", type=int, default=300, help="frames of the batch-1 reference loop")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="32-true", help="32-true, or bf16-mixed on a GPU")
    parser.add_argument("--root", type=Path, default=SHARED_PED2, help="an FFP-layout dataset with JPEG frames")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not (args.root / "testing" / "frames").is_dir():
        sys.exit(f"error: {args.root}: no FFP-layout test frames; pass --root <dataset> (e.g. the real Ped2 copy)")
    device = torch.device(args.device)
    autocast = args.precision == "bf16-mixed"
    data = RandomClips(args.steps * args.batch, args.channels, args.size)
    batches = [data.frames[i : i + args.batch].to(device) for i in range(0, len(data), args.batch)]

    plain = PlainFFP(make_model(args), device, autocast)
    bare = BareUNet(args, device, autocast)
    flops_ffp = count_flops(plain.step, batches[0])
    flops_unet = count_flops(bare.step, batches[0])

    rows: dict[str, list[float]] = {"ffp_plain": [], "unet": [], "ffp_lightning": []}
    for _ in range(args.repeats):
        rows["ffp_plain"].append(seconds_per_step(plain.step, batches, device))
        rows["unet"].append(seconds_per_step(bare.step, batches, device))
        rows["ffp_lightning"].append(lightning_seconds_per_step(args, copy.deepcopy(make_model(args)), data))
    t = {k: statistics.median(v) for k, v in rows.items()}
    gflops_ffp, gflops_unet = flops_ffp / t["ffp_plain"] / 1e9, flops_unet / t["unet"] / 1e9

    with tempfile.TemporaryDirectory() as cache:
        datamodule = VideoDataModule(
            "ped2",
            args.root,
            image_size=(args.size, args.size),
            channels=args.channels,
            clip_len=5,
            eval_batch_size=args.eval_batch,
            cache_dir=cache,
            num_workers=0,
        )
        datamodule.prepare_data()
        model = make_model(args)
        eval_rows: dict[str, list[float]] = {"suite": [], "reference": []}
        for _ in range(args.repeats):
            eval_rows["suite"].append(suite_eval_fps(model, args, datamodule))
            eval_rows["reference"].append(reference_eval_fps(model, args, args.root, args.eval_frames))
    fps = {k: statistics.median(v) for k, v in eval_rows.items()}

    ratios = {
        "flops": gflops_ffp / gflops_unet,
        "lightning": t["ffp_lightning"] / t["ffp_plain"],
        "eval": fps["suite"] / fps["reference"],
    }
    verdict = {
        "flops": ratios["flops"] >= GOALS["flops"],
        "lightning": ratios["lightning"] <= GOALS["lightning"],
        "eval": ratios["eval"] >= GOALS["eval"],
    }
    device_name = (
        torch.cuda.get_device_name() if device.type == "cuda" else (platform.processor() or platform.machine())
    )
    lines = [
        "# FFP training-step and evaluation throughput",
        "",
        f"Generated by `python experiments/bench_train.py {' '.join(sys.argv[1:])}` on {datetime.date.today()}.",
        "",
        f"- Device: {args.device} ({device_name}), {os.cpu_count()} CPU cores visible, torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op threads), precision {args.precision}; load average before "
        f"{os.getloadavg()[0]:.2f}",
        f"- Step: FFP at {args.size}x{args.size}, {args.channels} channel(s), t=4, batch {args.batch}, U-Net width "
        f"{args.features} depth 4, PatchGAN widths {2 * args.features}-{8 * args.features}, "
        + ("all four loss terms, Lucas-Kanade flow (flow=lk)" if args.flow == "lk" else "no flow term (flow=none)"),
        f"- {args.repeats} interleaved repeats of {args.steps} steps; medians",
        "",
        "| measurement | value |",
        "|---|---:|",
        f"| FLOPs per FFP G+D step | {flops_ffp / 1e9:.3f} GFLOP |",
        f"| FLOPs per bare U-Net step | {flops_unet / 1e9:.3f} GFLOP |",
        f"| FFP G+D step (plain loop) | {t['ffp_plain'] * 1e3:.1f} ms, {gflops_ffp:.2f} GFLOP/s |",
        f"| bare U-Net step | {t['unet'] * 1e3:.1f} ms, {gflops_unet:.2f} GFLOP/s |",
        f"| FFP step under lightning.Trainer | {t['ffp_lightning'] * 1e3:.1f} ms |",
        f"| test loop, suite (batch {args.eval_batch}, frame cache) | {fps['suite']:.1f} frames/s |",
        f"| test loop, reference style (batch 1, JPEG decode per frame) | {fps['reference']:.1f} frames/s |",
        "",
        f"1. GFLOP/s of the FFP step relative to the bare U-Net step: **{ratios['flops']:.2f}** "
        f"(goal >= {GOALS['flops']}: {'met' if verdict['flops'] else 'NOT met'})",
        f"2. Lightning step time / plain loop step time: **{ratios['lightning']:.3f}** "
        f"(goal <= {GOALS['lightning']}: {'met' if verdict['lightning'] else 'NOT met'})",
        f"3. Batched test loop / batch-1 reference loop, frames/s: **{ratios['eval']:.1f}x** "
        f"(goal >= {GOALS['eval']}: {'met' if verdict['eval'] else 'NOT met'})",
        "",
        "All repeats (seconds per step; frames/s): "
        + "; ".join(f"{k}: {', '.join(f'{x:.4f}' for x in v)}" for k, v in {**rows, **eval_rows}.items()),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
