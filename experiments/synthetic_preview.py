"""Look at the synthetic dataset: a PNG montage of test frames with mask outlines, label strips and the copy-last score.

Each row is one test video: frames sampled across it (anomalous ones framed in red, mask outlined), and under them the
copy-last score (-PSNR of frame t against t-1, per-video min-max normalised) with the ground truth shaded. Prints the
copy-last micro AUC, the sanity signal that the set is neither trivial nor unlearnable.

    python experiments/synthetic_preview.py data/synthetic --out experiments/results/synthetic_preview.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_auc_score

from vad.data.frames import read_image
from vad.data.index import list_dirs, list_images
from vad.data.synthetic import generate


def load_video(folder: Path) -> np.ndarray:
    """All frames of a folder as (F, H, W) float64 in [0, 1]."""
    return np.stack([read_image(p, channels=1)[:, :, 0] for p in list_images(folder)]).astype(np.float64) / 255.0


def copy_last_scores(frames: np.ndarray) -> np.ndarray:
    """Per-video min-max normalised -PSNR of frame t against t-1, for t = 1..F-1: (F-1,) in [0, 1]."""
    mse = np.maximum(((frames[1:] - frames[:-1]) ** 2).mean(axis=(1, 2)), 1e-10)
    raw = 10.0 * np.log10(mse)  # -PSNR with peak 1
    return (raw - raw.min()) / max(raw.max() - raw.min(), 1e-12)


def montage(root: Path, out: Path, per_video: int = 8) -> float:
    """Draw the montage into ``out`` and return the copy-last micro AUC over all test videos."""
    videos = list_dirs(root / "testing" / "frames")
    manifest = json.loads((root / "synthetic.json").read_text())
    fig = plt.figure(figsize=(1.5 * per_video, 2.3 * len(videos)))
    grid = fig.add_gridspec(2 * len(videos), per_video, height_ratios=[3, 1.4] * len(videos))
    all_scores, all_labels = [], []
    for row, folder in enumerate(videos):
        frames = load_video(folder)
        labels = np.load(root / "testing" / "labels" / f"{folder.name}.npy")
        scores = copy_last_scores(frames)
        all_scores.append(scores)
        all_labels.append(labels[1:])
        segments = manifest["test_videos"][folder.name]["segments"]
        # Half the samples inside anomalies, half spread over the video, so every kind shows up.
        inside = np.flatnonzero(labels)
        picks = np.linspace(0, len(frames) - 1, per_video - per_video // 2).round().astype(int)
        if inside.size:
            picks = np.r_[picks, inside[np.linspace(0, inside.size - 1, per_video // 2).round().astype(int)]]
        for col, i in enumerate(np.sort(picks)):
            ax = fig.add_subplot(grid[2 * row, col])
            ax.imshow(frames[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            mask_file = root / "testing" / "masks" / folder.name / f"{i:03d}.png"
            if labels[i] and mask_file.is_file():
                ax.contour(read_image(mask_file, channels=1)[:, :, 0] > 0, levels=[0.5], colors="red", linewidths=0.6)
            ax.set_title(f"{folder.name}/{i:03d} y={labels[i]}", fontsize=7, color="red" if labels[i] else "black")
            ax.set_xticks([])
            ax.set_yticks([])
        strip = fig.add_subplot(grid[2 * row + 1, :])
        strip.fill_between(np.arange(len(labels)), 0, labels, color="red", alpha=0.2, step="mid")
        strip.plot(np.arange(1, len(labels)), scores, color="black", linewidth=0.8)
        strip.set_title(
            "copy-last score; " + ", ".join(f"{s['kind']} {s['first']}-{s['last']}" for s in segments), fontsize=7
        )
        strip.set_xlim(0, len(labels) - 1)
        strip.tick_params(labelsize=6)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return float(roc_auc_score(np.concatenate(all_labels), np.concatenate(all_scores)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="dataset folder (generated with the defaults unless it holds one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("synthetic_preview.png"))
    args = parser.parse_args()
    root = args.root if (args.root / "synthetic.json").is_file() else generate(args.root, args.seed)
    auc = montage(root, args.out)
    print(f"{args.out}: copy-last micro AUC {auc:.3f}")


if __name__ == "__main__":
    main()
