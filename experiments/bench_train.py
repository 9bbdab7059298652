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
    python experiments/bench_train.py --features 16 --batch 8 --flow none   # as experiment=ffp_ped2_cpu64
    python experiments/bench_train.py --size 256 --features 64 --device cuda --precision bf16-mixed
    python experiments/bench_train.py --reference-step      # only 4. below (128x128, batch 4, width 64, no flow)
    python experiments/bench_train.py --precisions          # only 5. below: float32 vs bf16 on this CPU

5. ``--precisions``: the ``experiment=ffp_ped2_cpu`` generator (128x128 grey, width 32, batch 4, channels-last,
   intensity + gradient, no discriminator) in float32 and under bfloat16 autocast, side by side: seconds per training
   step and frames/s of one-frame inference, with the CPU's bfloat16 units named and what ``trainer.precision=auto``
   chooses here (``vad.precision``). Without bf16 units bf16 is emulated and many times slower: the reason auto
   exists. Writes ``experiments/results/bench_precision.md``.

4. ``--reference-step``: the suite's FFP iteration (clips read from the frame cache, converted, the G and D steps of
   ``vad.methods.ffp``) against a reference-style iteration written as the public PyTorch ports of FFP are: a U-Net
   with batch norm after every convolution, transposed-convolution upsampling, a PatchGAN with batch norm and zero
   padding, both frames' clips decoded from 5 JPEG files per sample every step, NCHW. Same losses (intensity,
   gradient, 0.05 LSGAN), learning rates, batch and order (G then D). Goal: the suite's iteration <= 0.8x the
   reference's. Writes ``experiments/results/bench_train_reference.md``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import itertools
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

from vad import precision as precisions
from vad.data.datamodule import VideoDataModule
from vad.data.frames import read_image, resize
from vad.flow import LucasKanade
from vad.methods import losses
from vad.methods.ffp import FFP
from vad.nets import UNet
from vad.reporting.machine import cpu_description

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
        "or none (as in experiment=ffp_ped2_cpu64)",
    )
    parser.add_argument("--eval-batch", type=int, default=32)
    parser.add_argument("--eval-frames", type=int, default=300, help="frames of the batch-1 reference loop")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="32-true", help="32-true, or bf16-mixed on a GPU")
    parser.add_argument("--root", type=Path, default=SHARED_PED2, help="an FFP-layout dataset with JPEG frames")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--reference-step", action="store_true", help="only the reference-style comparison (4.)")
    parser.add_argument("--precisions", action="store_true", help="only float32 vs bf16 at the CPU preset (5.)")
    args = parser.parse_args()
    if args.precisions:
        precision_comparison(args)
        return
    if args.reference_step:
        args.flow = "none"
        if "--size" not in sys.argv:
            args.size = 128
        if "--features" not in sys.argv:
            args.features = 64
        if "--steps" not in sys.argv:
            args.steps = 6
        reference_comparison(args)
        return
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


# -- 4. a reference-style iteration, as the public PyTorch ports of FFP write it ------------------------------------


def _ref_double_conv(cin: int, cout: int) -> torch.nn.Sequential:
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )  # fmt: skip


class RefUNet(torch.nn.Module):
    """The ports' generator: double convolutions with batch norm, max-pool down, transposed convolutions up, tanh."""

    def __init__(self, cin: int, cout: int, width: int) -> None:
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.inc = _ref_double_conv(cin, w[0])
        self.downs = torch.nn.ModuleList(_ref_double_conv(w[i], w[i + 1]) for i in range(3))
        up = torch.nn.ConvTranspose2d
        self.ups = torch.nn.ModuleList(up(w[i + 1], w[i], 2, stride=2) for i in reversed(range(3)))
        self.convs = torch.nn.ModuleList(_ref_double_conv(2 * w[i], w[i]) for i in reversed(range(3)))
        self.out = torch.nn.Conv2d(w[0], cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(torch.nn.functional.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for up, conv in zip(self.ups, self.convs, strict=True):
            x = conv(torch.cat((skips.pop(), up(x)), dim=1))
        return torch.tanh(self.out(x))


class RefPatchGAN(torch.nn.Module):
    """The ports' discriminator: 4x4 convolutions, zero padding, batch norm after all but the first, LeakyReLU; the
    same widths as the suite's (the official code's 128-256-512-512 at width 64)."""

    def __init__(self, cin: int, widths: list[int]) -> None:
        super().__init__()
        nn = torch.nn
        layers: list[torch.nn.Module] = [nn.Conv2d(cin, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            last = i == len(widths) - 2
            layers += [nn.Conv2d(a, b, 4, 1 if last else 2, 1), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ReferenceStep:
    """One reference-style iteration: decode the batch's 5 JPEGs per sample, G step, D step (NCHW; float32 as the
    ports run, or with ``autocast`` the forward passes under bfloat16 autocast, as the port would run if wrapped)."""

    def __init__(self, args: argparse.Namespace, files: list[list[Path]], autocast: bool = False) -> None:
        torch.manual_seed(0)
        c = args.channels
        self.g = RefUNet(4 * c, c, args.features)
        f = args.features
        self.d = RefPatchGAN(c, [2 * f, 4 * f, 8 * f, 8 * f])  # as make_model's suite discriminator
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=2e-4)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=2e-5)
        self.files, self.args, self.next = files, args, 0
        self.autocast = autocast

    def load(self) -> torch.Tensor:
        clips = []
        for _ in range(self.args.batch):
            paths = self.files[self.next % len(self.files)]
            self.next += 1
            frames = [resize(read_image(p, self.args.channels), (self.args.size, self.args.size)) for p in paths]
            clips.append(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1)
        return torch.stack(clips)

    def step(self, _: torch.Tensor | None = None) -> None:
        frames = self.load()
        inputs, target = frames[:, :-1].flatten(1, 2), frames[:, -1]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            prediction = self.g(inputs)
            self.d.requires_grad_(False)
            loss_g = (
                losses.intensity_loss(prediction, target)
                + losses.gradient_loss(prediction, target)
                + 0.05 * losses.lsgan_generator_loss(self.d(prediction))
            )
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.d.requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            loss_d = losses.lsgan_discriminator_loss(self.d(target), self.d(prediction.detach()))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()


class SuiteStep:
    """One suite iteration: a batch of clips from the frame cache (as the training loader gives it: uint8), converted
    to float by the module (``prepare_batch``, as Lightning's batch transfer does), then the G and D steps of
    vad.methods.ffp as the LightningModule runs them (PlainFFP), in float32 or under bfloat16 autocast (as
    ``trainer.precision=bf16-mixed`` runs them)."""

    def __init__(self, args: argparse.Namespace, clips: object, autocast: bool = False) -> None:
        from vad.data.batches import collate_clips

        self.collate = collate_clips
        model = make_model(args)
        model.channels_last = True  # conf/model/ffp.yaml's default, applied when a Trainer sets the module up
        model.setup("fit")
        self.plain = PlainFFP(model, torch.device("cpu"), autocast=autocast)
        self.clips, self.args, self.next = clips, args, 0

    def step(self, _: torch.Tensor | None = None) -> None:
        n = len(self.clips)
        indices = [(self.next + i * 97) % n for i in range(self.args.batch)]
        self.next += 1
        batch = self.plain.model.prepare_batch(self.collate(self.clips.__getitems__(indices)))
        self.plain.step(batch["frames"])


def reference_comparison(args: argparse.Namespace) -> None:
    videos = sorted(p for p in (args.root / "training" / "frames").iterdir() if p.is_dir())
    files = []
    for video in videos:
        frames = sorted(video.glob("*.jpg"))
        files += [frames[i : i + 5] for i in range(0, len(frames) - 4, 7)]
    with tempfile.TemporaryDirectory() as cache:
        data = VideoDataModule("ped2", args.root, image_size=(args.size, args.size), channels=args.channels,
                               clip_len=5, cache_dir=cache, num_workers=0)  # fmt: skip
        data.prepare_data()
        data.setup("fit")
        # each side in float32 (as the ports run) and under bfloat16 autocast (trainer.precision=bf16-mixed; for
        # the reference, the ports' step wrapped in autocast), all four interleaved
        steppers = {
            "suite": SuiteStep(args, data.train_dataset).step,
            "suite_bf16": SuiteStep(args, data.train_dataset, autocast=True).step,
            "reference": ReferenceStep(args, files).step,
            "reference_bf16": ReferenceStep(args, files, autocast=True).step,
        }
        steps = [None] * (args.steps + 1)
        rows: dict[str, list[float]] = {name: [] for name in steppers}
        for _ in range(args.repeats):
            for name, step in steppers.items():
                rows[name].append(seconds_per_step(step, steps, torch.device("cpu")))
    t = {k: statistics.median(v) for k, v in rows.items()}
    goal = 0.8
    ratios = {
        "suite float32 / reference float32 (as the ports run)": t["suite"] / t["reference"],
        "suite bf16-mixed / reference float32 (as the ports run)": t["suite_bf16"] / t["reference"],
        "suite bf16-mixed / reference under bf16 autocast (same precision)": t["suite_bf16"] / t["reference_bf16"],
    }
    lines = [
        "# FFP iteration: the suite vs a reference-style iteration (the public PyTorch ports' way)",
        "",
        f"Generated by `python experiments/bench_train.py {' '.join(sys.argv[1:])}` on {datetime.date.today()}: "
        f"{cpu_description()}, {os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads). {args.size}x{args.size}, {args.channels} channel(s), batch {args.batch}, width {args.features} "
        f"(U-Net depth 4, PatchGAN {2 * args.features}-{8 * args.features} on both sides), intensity + gradient + "
        f"0.05 adversarial, no "
        f"flow term; {args.repeats} interleaved repeats of {args.steps} steps on the real Ped2 copy, medians.",
        "",
        "| iteration | seconds per iteration |",
        "|---|---:|",
        f"| suite: clips from the frame cache + vad.methods.ffp G and D steps (channels-last), float32 "
        f"| {t['suite']:.3f} |",
        f"| suite, the same under bfloat16 autocast (`trainer.precision=bf16-mixed`) | {t['suite_bf16']:.3f} |",
        f"| reference style: 5 JPEG decodes per sample + batch-norm U-Net / PatchGAN, NCHW, float32 (as the ports "
        f"run) | {t['reference']:.3f} |",
        f"| reference style under bfloat16 autocast (not an option of the ports) | {t['reference_bf16']:.3f} |",
        "",
        *[
            f"- {name}: **{value:.2f}** (goal <= {goal}: {'met' if value <= goal else 'NOT met'})"
            for name, value in ratios.items()
        ],
        "",
        "All repeats: " + "; ".join(f"{k}: {', '.join(f'{x:.3f}' for x in v)}" for k, v in rows.items()),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = RESULTS.with_name("bench_train_reference.md")
    out.write_text(text)


class PresetStep:
    """One training step of the ``ffp_ped2_cpu`` generator (intensity + gradient, no discriminator: the preset's
    adversarial weight is 0), channels-last as the preset trains, in float32 or under bfloat16 autocast."""

    def __init__(self, autocast: bool) -> None:
        torch.manual_seed(0)
        model = FFP(channels=1, clip_len=5, generator={"features": 32, "depth": 4},
                    loss={"intensity": 1.0, "gradient": 1.0, "flow": 0.0, "adversarial": 0.0},
                    optim={"lr_g": 2e-4, "lr_d": 2e-5, "milestones": [8800]})  # fmt: skip
        model.channels_last = True
        model.setup("fit")
        self.model, self.autocast = model, autocast
        self.opt = torch.optim.Adam(model.generator.parameters(), lr=2e-4)

    def step(self, frames: torch.Tensor) -> None:
        m = self.model
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            clip = m.split_clip(frames)
            loss = m.weighted_sum(m.all_generator_terms(m.forward_clip(clip), clip))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def infer(self, frames: torch.Tensor) -> None:
        m = self.model
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            m.forward_clip(m.split_clip(frames[:1]))


def precision_comparison(args: argparse.Namespace) -> None:
    size, batch = 128, 4
    data = RandomClips((args.steps + 2) * batch, 1, size)
    batches = [data.frames[i : i + batch].contiguous(memory_format=torch.contiguous_format)
               for i in range(0, len(data), batch)]  # fmt: skip
    steppers = {name: PresetStep(autocast=name == "bf16-mixed") for name in precisions.PRECISIONS}
    train: dict[str, list[float]] = {name: [] for name in steppers}
    infer: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(args.repeats):
        for name, stepper in steppers.items():
            for b in batches[:2]:  # warm-up
                stepper.step(b)
            times = []
            for b in batches[2:]:
                start = time.perf_counter()
                stepper.step(b)
                times.append(time.perf_counter() - start)
            train[name].append(statistics.median(times))
            times = []
            for b in batches:
                start = time.perf_counter()
                stepper.infer(b)
                times.append(time.perf_counter() - start)
            infer[name].append(statistics.median(times[2:]))
    t = {k: statistics.median(v) for k, v in train.items()}
    f = {k: statistics.median(v) for k, v in infer.items()}
    chosen, why = precisions.resolve("auto", "cpu")
    iterations = 11000
    lines = [
        "# float32 vs bfloat16 autocast on this CPU: the ffp_ped2_cpu generator",
        "",
        f"Generated by `python experiments/bench_train.py {' '.join(sys.argv[1:])}` on {datetime.date.today()}: "
        f"{cpu_description()}, {os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads). 128x128 grey, batch 4, U-Net width 32 depth 4, channels-last, intensity + gradient (no "
        f"discriminator), Adam; {args.repeats} interleaved repeats of {args.steps} steps after 2 warm-up steps, "
        "medians; inference: one clip (one frame scored) per forward pass.",
        "",
        f"Here {why}.",
        "",
        "| precision | training step (s) | 11000 iterations (h, steps only) | inference, one frame (s) | frames/s |",
        "|---|---:|---:|---:|---:|",
        *[
            f"| {name} | {t[name]:.3f} | {t[name] * iterations / 3600:.2f} | {f[name]:.4f} | {1 / f[name]:.1f} |"
            for name in steppers
        ],
        "",
        f"- bf16-mixed / float32, training step: **{t['bf16-mixed'] / t['32-true']:.2f}x** the time",
        f"- bf16-mixed / float32, inference: **{f['bf16-mixed'] / f['32-true']:.2f}x** the time",
        f"- auto chooses **{chosen}**",
        "",
        "All repeats: "
        + "; ".join(
            f"{kind} {k}: {', '.join(f'{x:.4f}' for x in v)}"
            for kind, rows in (("train", train), ("infer", infer))
            for k, v in rows.items()
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.with_name("bench_precision.md").write_text(text)


if __name__ == "__main__":
    main()
