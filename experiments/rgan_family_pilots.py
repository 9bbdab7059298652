"""Choosing the r-GAN family's CPU presets without test labels: how well each candidate predicts held-out NORMAL
Ped2 videos, against copying the last frame, after the same wall time.

    python experiments/rgan_family_pilots.py --data <folder holding ped2/>        # about 45 minutes on 2 cores

Each candidate trains for ``--minutes`` (``trainer.max_time``, one run at a time, no lr step) on 14 of Ped2's 16
training videos (``dataset.val_videos=2``: two normal videos held out, drawn by the seed); its last checkpoint then
predicts every clip of the two held-out videos. Reported: the mean PSNR of those predictions, the same for copying
the last input frame, and the method's own per-frame loss. A predictor that does not predict normal frames better
than copying the last one cannot be expected to separate anomalies better than copy-last does; among those that do,
the higher held-out PSNR wins. No test video is read. Writes ``experiments/results/rgan_family_pilots.md``.

That criterion picked the presets, and the test set then showed it is not enough: a better predictor of normal
frames is not a better detector (experiments/results/rgan_family_ped2_cpu.md). The table therefore also reports a
label-free separability check, the AUC of each candidate's score between normal and skip-frame clips of the same
held-out videos (:func:`skip_frame_auc`), added afterwards as a diagnostic: it chose nothing here. A finished
candidate's result gets it added from its checkpoint on the next run of the script.

The candidates: the paper's form at the CPU presets' sizes, and two changes, alone and together:
- ``residual``: read out the change from the last input frame (the net starts near copy-last);
- the paper's latent GRID instead of its depth: r-GAN*'s latent is 16x16 at 256x256 (four poolings); at 64x64 two
  poolings keep the 16x16 grid, and so the size of a latent cell relative to a pedestrian. r-VAE's VGG16 latent is
  8x8 at 256x256; at 64x64 three blocks keep it;
and, in a second round, r-GAN's loss with the squared error (``intensity``) in place of its absolute-error terms
(L1 and gradient difference), MS-SSIM and the adversarial term kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from vad.app.build import build_datamodule, build_model
from vad.checkpoint_io import CONFIG_KEY
from vad.data.batches import clips_to_tensor, frames_to_float
from vad.data.clips import ClipDataset
from vad.evaluation.fusion import fuse
from vad.methods import losses

REPO = Path(__file__).resolve().parents[1]
#: r-GAN's prediction loss with the squared error in place of its absolute-error terms (L1, gradient difference)
SQUARED = ["model.loss.l1=0", "model.loss.gradient=0", "model.loss.intensity=1"]
#: the frame stride of the skip-frame pseudo-anomalies of the separability check (a diagnostic; see skip_frame_auc)
SKIP_STRIDE = 2
HOLD_OUT = ["dataset.val_videos=2", "test=false", "model.optim.milestones=[]", "trainer.max_steps=-1"]
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "rgan": ("rgan_ped2_cpu", []),
    "rgan residual": ("rgan_ped2_cpu", ["model.generator.residual=true"]),
    "rgan_latent 4x4": ("rgan_latent_ped2_cpu", []),
    "rgan_latent 4x4 residual": ("rgan_latent_ped2_cpu", ["model.generator.residual=true"]),
    "rgan_latent 16x16": ("rgan_latent_ped2_cpu", ["model.generator.depth=2"]),
    "rgan_latent 16x16 residual": (
        "rgan_latent_ped2_cpu",
        ["model.generator.depth=2", "model.generator.residual=true"],
    ),
    "rvae 4x4": ("rvae_ped2_cpu", []),
    "rvae 4x4 residual": ("rvae_ped2_cpu", ["model.generator.residual=true"]),
    "rvae 8x8": ("rvae_ped2_cpu", ["model.generator.blocks=[2,2,3]"]),
    "rvae 8x8 residual": ("rvae_ped2_cpu", ["model.generator.blocks=[2,2,3]", "model.generator.residual=true"]),
    # second round: the residual r-GAN / r-GAN* above stayed exactly at copy-last (see the report); squared error
    # instead of the absolute-error terms
    "rgan squared": ("rgan_ped2_cpu", SQUARED),
    "rgan residual squared": ("rgan_ped2_cpu", ["model.generator.residual=true", *SQUARED]),
    "rgan_latent 4x4 residual squared": ("rgan_latent_ped2_cpu", ["model.generator.residual=true", *SQUARED]),
    "rgan_latent 16x16 residual squared": (
        "rgan_latent_ped2_cpu",
        ["model.generator.depth=2", "model.generator.residual=true", *SQUARED],
    ),
}


def skip_frame_auc(model: torch.nn.Module, held_out: ClipDataset) -> dict[str, float]:
    """A label-free separability check on the held-out normal videos: every clip of ``clip_len`` consecutive frames
    (normal) against the clip from the same first frame at stride :data:`SKIP_STRIDE` (a pseudo-anomaly: everything
    moves that many times faster; LNTRA / STEAL's skip-frame clips). Returns the ROC AUC over the pooled clips (raw
    values, no per-video normalisation) of the method's score (``model.score``), of each of its signals alone
    (oriented so that higher is more anomalous: PSNR negated), and of copy-last's -PSNR."""
    span = SKIP_STRIDE * (held_out.clip_len - 1) + 1
    scores: dict[str, list[np.ndarray]] = {"score": [], "copy": []}
    labels = []
    with torch.no_grad():
        for video_id in range(len(held_out.videos)):
            frames = held_out.frames(video_id)
            starts = range(len(frames) - span + 1)
            for stride, label in ((1, 0), (SKIP_STRIDE, 1)):
                clips = [frames[s : s + stride * (held_out.clip_len - 1) + 1 : stride] for s in starts]
                for first in range(0, len(clips), 32):
                    batch = {"frames": clips_to_tensor(clips[first : first + 32])}
                    signals = {k: v.double().numpy() for k, v in model.frame_signals(batch).items()}
                    scores["score"].append(fuse(signals, model.score_weights, normalise=False))
                    for name, values in signals.items():
                        scores.setdefault(name, []).append(-values if name == "psnr" else values)
                    copied = losses.psnr(batch["frames"][:, -2], batch["frames"][:, -1])
                    scores["copy"].append(-copied.double().numpy())
                labels.append(np.full(len(clips), label))
    truth = np.concatenate(labels)
    auc = {name: float(roc_auc_score(truth, np.concatenate(values))) for name, values in scores.items()}
    return {
        f"skip{SKIP_STRIDE}_auc": auc.pop("score"),
        f"copy_last_skip{SKIP_STRIDE}_auc": auc.pop("copy"),
    } | {f"skip{SKIP_STRIDE}_auc {name}": value for name, value in auc.items()}


def held_out_quality(checkpoint: Path, cache_dir: Path) -> dict[str, float]:
    """Mean PSNR of the checkpoint's predictions and of copy-last over every clip of the held-out videos, and the
    method's mean score signals there."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = OmegaConf.create(state[CONFIG_KEY]["config"])
    cfg.dataset.cache_dir = str(cache_dir)
    model = build_model(cfg)
    model.load_state_dict(state["state_dict"])
    model.eval()
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    held_out = datamodule.val_dataset
    copied, signals = [], {}
    with torch.no_grad():
        for start in range(0, len(held_out), 32):
            items = held_out.__getitems__(list(range(start, min(start + 32, len(held_out)))))
            frames = frames_to_float(torch.stack([item["frames"] for item in items]))
            copied.append(losses.psnr(frames[:, -2], frames[:, -1]))
            for name, value in model.frame_signals({"frames": frames}).items():  # every candidate emits psnr
                signals.setdefault(name, []).append(value)
    predicted = signals["psnr"]
    return (
        skip_frame_auc(model, held_out)
        | {
            "videos": [v.name for v in datamodule.val_split],
            "clips": len(held_out),
            "psnr": float(torch.cat(predicted).mean()),
            "copy_last_psnr": float(torch.cat(copied).mean()),
            "better_than_copy": float((torch.cat(predicted) > torch.cat(copied)).float().mean()),
        }
        | {f"mean {name}": float(torch.cat(values).mean()) for name, values in signals.items()}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding ped2/ (paths.data_dir)")
    parser.add_argument("--minutes", type=float, default=4.0, help="training wall time of each candidate")
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "rgan_family_pilots")
    parser.add_argument("--report", type=Path, default=REPO / "experiments" / "results" / "rgan_family_pilots.md")
    args = parser.parse_args()
    out, data = args.out.resolve(), args.data.resolve()
    out.mkdir(parents=True, exist_ok=True)
    seconds = round(args.minutes * 60)
    max_time = f"00:00:{seconds // 60:02d}:{seconds % 60:02d}"
    rows = []
    for name, (experiment, overrides) in CANDIDATES.items():
        folder = out / name.replace(" ", "_")
        result = folder / "held_out.json"
        if not result.is_file():
            command = [
                *(sys.executable, "-m", "vad.train", f"experiment={experiment}", *HOLD_OUT, *overrides),
                *(f"+trainer.max_time={max_time}", f"paths.data_dir={data}", f"hydra.run.dir={folder}"),
            ]
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(command[2:])}", flush=True)
            with open(out / f"{folder.name}.log", "w") as log:
                subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
            checkpoint = folder / "checkpoints" / "last.ckpt"
            steps = torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]
            quality = held_out_quality(checkpoint, REPO / ".cache" / "frames") | {"steps": steps}
            result.write_text(json.dumps(quality, indent=2))
        quality = json.loads(result.read_text())
        if f"skip{SKIP_STRIDE}_auc psnr" not in quality:  # a result from before the separability check: add it
            checkpoint = folder / "checkpoints" / "last.ckpt"
            quality |= held_out_quality(checkpoint, REPO / ".cache" / "frames")
            result.write_text(json.dumps(quality, indent=2))
        rows.append((name, experiment, overrides, quality))
        print(f"{name}: {quality}", flush=True)

    lines = [
        "| candidate | overrides on the preset | iterations | held-out PSNR (dB) | copy-last PSNR (dB) | clips better "
        f"than copy-last | skip-frame AUC (stride {SKIP_STRIDE}): score | same: -PSNR alone | method's mean score "
        "signal |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, experiment, overrides, q in rows:
        signal = next((f"{k.removeprefix('mean ')} {v:.5f}" for k, v in q.items() if k.startswith("mean ")), "")
        lines.append(
            f"| {name} | `{experiment}` {' '.join(overrides) or '(as is)'} | {q['steps']} | {q['psnr']:.2f} | "
            f"{q['copy_last_psnr']:.2f} | {q['better_than_copy']:.0%} | {q[f'skip{SKIP_STRIDE}_auc']:.4f} | "
            f"{q[f'skip{SKIP_STRIDE}_auc psnr']:.4f} | {signal} |"
        )
    held = rows[0][3]
    text = f"""# Choosing the r-GAN family's CPU presets on held-out normal videos (no test labels)

Generated by `python experiments/rgan_family_pilots.py --data <folder holding ped2/> --minutes {args.minutes:g}`.
Each candidate trained for {args.minutes:g} minutes (wall time, one at a time on 2 CPU cores, no lr step) on 14 of
Ped2's 16 training videos; held out: training videos {", ".join(held["videos"])} ({held["clips"]} clips of 4 frames,
all normal). 64x64 grey, t = 3, batch 8, seed 0. The test videos and their labels are not read.

{chr(10).join(lines)}

Skip-frame AUC (a diagnostic added after the presets were chosen; it chose nothing): the same held-out videos, each
clip of 4 consecutive frames (normal) against the clip from the same first frame at stride {SKIP_STRIDE} (a
pseudo-anomaly: everything moves {SKIP_STRIDE}x faster), scored by the method's own score (`model.score`) and by the
-PSNR of its prediction alone, on raw values pooled over both videos; copying the last frame scores
{held[f"copy_last_skip{SKIP_STRIDE}_auc"]:.4f} on the same clips.
"""
    args.report.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
