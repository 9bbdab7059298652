"""FFP's CPU preset, unchanged, on other footage: OpenCV's ``vtest.avi`` with anomalies injected into its second part.

    python experiments/vtest_injected.py --video <path>/vtest.avi --out <folder>      # about 10-30 min on 2 cores

``vtest.avi`` (795 frames of a pedestrian street, 768x576 at 10 frames/s) has no anomaly labels. This script

1. splits it in time: frames 0-479 become 6 training videos of 80 frames (2 of them held out for validation by the
   preset, as on Ped2), frames 480-794 become 3 test videos of 105 frames;
2. injects 2 events into each test video with ``vad.data.pseudo.validation`` at the native size, scene-sized
   (``object_scale`` [0.5, 2]: half to twice the typical moving object of the training part, a pedestrian): a
   pedestrian cut from a training frame crossing the street at 17-46 px per frame (soft-edged), or a region centred
   on a pedestrian of the test video playing 2-4x faster; 20-40 frames each, seed 2026; the frames of an event are
   labelled 1. These are the kinds of the scene-sized validation set, with a different seed, longer events and
   other footage: the test measures how the preset transfers to a new scene, not a new anomaly type. (The first
   version drew them anywhere, at 20-35% of the frame: most landed on lawn or walls and changed nothing visible;
   ``experiments/results/vtest_injected.md``);
3. writes the FFP layout (``training/frames/<NN>/``, ``testing/frames/<NN>/`` JPEGs, ``testing/labels/<NN>.npy``) and
   the plan (``injected.json``) under ``--out/vtest``;
4. trains ``experiment=ffp_ped2_cpu dataset=folder`` on it (nothing else overridden: the preset is not tuned per
   dataset) and evaluates copy-last at the same size and clip length; prints both and writes
   ``experiments/results/vtest_injected.md`` (the text below the :data:`DISCUSSION` marker is kept).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from omegaconf import OmegaConf

from vad.data.pseudo.kinds import large_enough, moving_objects, typical_object_size
from vad.data.pseudo.validation import check_options, inject, plan_video

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results" / "vtest_injected.md"
DISCUSSION = "<!-- discussion: kept by the script -->"
TRAIN_FRAMES, TRAIN_VIDEO, TEST_VIDEO = 480, 80, 105
SEED = 2026
OPTIONS = {"kinds": ["patch", "local_speed"], "events": 2, "length": [20, 40], "object_scale": [0.5, 2.0]}
GUARD = 4  # the first clip_len - 1 frames of a test video are not scored by FFP


def decode(path: Path) -> np.ndarray:
    """Every frame of ``path`` as uint8 RGB (N, 3, H, W)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB).transpose(2, 0, 1))
    capture.release()
    if not frames:
        raise SystemExit(f"{path}: no frame could be decoded; give the path of OpenCV's vtest.avi with --video")
    return np.stack(frames)


def write_video(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), cv2.cvtColor(frame.transpose(1, 2, 0), cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])  # fmt: skip


def build(video: Path, root: Path) -> list[dict]:
    """The dataset under ``root`` (kept when it exists); returns the injection plan."""
    plan_file = root / "injected.json"
    if plan_file.is_file():
        return json.loads(plan_file.read_text())
    frames = decode(video)
    train = [frames[k : k + TRAIN_VIDEO] for k in range(0, TRAIN_FRAMES, TRAIN_VIDEO)]
    test = [frames[k : k + TEST_VIDEO] for k in range(TRAIN_FRAMES, len(frames) - TEST_VIDEO + 1, TEST_VIDEO)]
    rng = np.random.default_rng(SEED)
    options = check_options(OPTIONS)
    plans = []
    for k, part in enumerate(train, 1):
        write_video(root / "training" / "frames" / f"{k:02d}", part)
    # the scene's pedestrians: their typical size from the training part; patches are cut around them there
    train_objects = [moving_objects(part) for part in train]
    size = typical_object_size([o for video in train_objects for o in video])
    cut = [large_enough(video, size) for video in train_objects]
    print(f"typical moving object: {size[0]:.0f}x{size[1]:.0f} px (height x width) at {train[0].shape[2:]}")
    for k, part in enumerate(test, 1):
        name = f"{k:02d}"
        # the test video's own pedestrians (before injection) place its fast regions: objects[own]
        own = large_enough(moving_objects(part), size)
        plan = plan_video(rng, name, len(part), part.shape[2:], options["kinds"], options, GUARD,
                          sources=list(range(len(train))), object_size=size, objects=[*cut, own],
                          own=len(train))  # fmt: skip
        write_video(root / "testing" / "frames" / name, inject(part, plan, train))
        (root / "testing" / "labels").mkdir(parents=True, exist_ok=True)
        np.save(root / "testing" / "labels" / f"{name}.npy", plan.labels().astype(np.uint8))
        plans.append(plan.to_json())
    plan_file.write_text(json.dumps(plans, indent=1))
    return plans


def run(entry: str, overrides: list[str], run_dir: Path) -> tuple[dict, float]:
    if not (run_dir / "metrics.json").is_file():
        start = time.perf_counter()
        command = [sys.executable, "-m", entry, *overrides, f"hydra.run.dir={run_dir}"]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)
        (run_dir / "wall_seconds.txt").write_text(f"{time.perf_counter() - start:.0f}\n")
    wall = float((run_dir / "wall_seconds.txt").read_text()) if (run_dir / "wall_seconds.txt").is_file() else 0.0
    return json.loads((run_dir / "metrics.json").read_text()), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, required=True, help="OpenCV's vtest.avi")
    parser.add_argument("--out", type=Path, required=True, help="folder for the dataset and the runs")
    args = parser.parse_args()
    out = args.out.resolve()
    root = out / "vtest"
    plans = build(args.video.resolve(), root)
    data = ["dataset=folder", f"dataset.root={root}", "dataset.name=vtest"]
    ffp, ffp_wall = run("vad.train", ["experiment=ffp_ped2_cpu", *data], out / "ffp_ped2_cpu")
    preset = OmegaConf.load(out / "ffp_ped2_cpu" / ".hydra" / "config.yaml")
    height, width = preset.dataset.image_size
    floor, floor_wall = run(
        "vad.evaluate",
        ["model=copy_last", *data, f"dataset.image_size=[{height},{width}]", f"model.clip_len={preset.model.clip_len}"],
        out / "copy_last",
    )
    events = sum(len(p["events"]) for p in plans)
    anomalous = sum(p["anomalous_frames"] for p in plans)
    frames = sum(p["frames"] for p in plans)
    rows = [
        "| run | micro AUC | macro AUC | score | wall |",
        "|---|---:|---:|---|---:|",
        f"| copy-last (untrained floor) | {floor['auc_micro']:.4f} | {floor['auc_macro']:.4f} | -PSNR | "
        f"{floor_wall:.0f} s |",
        f"| `experiment=ffp_ped2_cpu` unchanged | {ffp['auc_micro']:.4f} | {ffp['auc_macro']:.4f} | "
        f"{ffp['weights']} | {ffp_wall:.0f} s |",
    ]
    text = "\n".join(
        [
            "# FFP's CPU preset on other footage: vtest.avi with injected anomalies",
            "",
            f"`python experiments/vtest_injected.py --video vtest.avi --out <folder>`. Training: frames 0-"
            f"{TRAIN_FRAMES - 1} as 6 videos of {TRAIN_VIDEO} frames (the preset holds 2 out for validation). Test: "
            f"{len(plans)} videos of {TEST_VIDEO} frames, {events} injected events ({OPTIONS['kinds']}, "
            f"{OPTIONS['length']} frames, scene-sized: object_scale {OPTIONS['object_scale']}, seed {SEED}), "
            f"{anomalous} of {frames} frames anomalous. Per-video min-max, "
            "last checkpoint, clip length of the preset for both rows; labels: the injection plan.",
            "",
            *rows,
            "",
            f"FFP's checkpoint: {ffp.get('checkpoint')}; machine: {ffp.get('machine', 'see metrics.json')}.",
        ]
    )
    print(text)
    kept = RESULTS.read_text().partition(DISCUSSION)[2] if RESULTS.is_file() else "\n"
    RESULTS.write_text(f"{text}\n\n{DISCUSSION}{kept}")


if __name__ == "__main__":
    main()
