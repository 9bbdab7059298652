"""Validation AUC of trained checkpoints, for choosing between them or between score signals without test labels.

    python experiments/validation_auc.py --data <folder holding ped2/> --seeds 0 1 2 3 4 \\
        --report experiments/results/<name>.md  logs/<run>/checkpoints/last.ckpt  [more checkpoints]

Each checkpoint is rebuilt from the config it carries; its run must have held videos out (``dataset.val_videos``):
the same seed draws the same held-out videos here. Those videos get pseudo-anomalies injected (``vad.data.pseudo.
validation``) once per ``--seeds`` entry (``dataset.val_pseudo.seed``), and every injection is scored under the test's
protocol (per-video min-max of the fused score): the method's configured score, each of its signals alone (oriented:
PSNR negated, every other signal as it is), and copy-last's -PSNR on the same clips; with ``--smoothing 0 2 4``, each of
them also after a temporal Gaussian of that many frames (``model.smoothing``). Reported per score: the mean and the
spread over the injections of the micro and macro AUC. No test video and no test label is read.

``--object-scale 0.5 2`` injects scene-sized pseudo-anomalies instead of the run's own ``dataset.val_pseudo`` sizes:
patches cut around the held-out videos' moving objects and fast regions centred on them, the typical moving object's
box times a factor from that range (``dataset.val_pseudo.object_scale``, :mod:`vad.data.pseudo.validation`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from vad import precision as precisions
from vad.app.build import build_datamodule, build_model
from vad.checkpoint_io import CONFIG_KEY
from vad.evaluation.protocol import evaluate
from vad.evaluation.records import videos_from_records
from vad.methods import losses
from vad.methods.loops import VALIDATION_LABELS
from vad.selection import paired_wins

REPO = Path(__file__).resolve().parents[1]


def load(checkpoint: Path, data: Path | None, cache: Path) -> tuple[torch.nn.Module, object]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = OmegaConf.create(state[CONFIG_KEY]["config"])
    if not cfg.dataset.get("val_videos"):
        raise SystemExit(f"{checkpoint}: its run held no video out (dataset.val_videos=0); nothing to validate on")
    if data is not None:
        cfg.dataset.root = str(data / Path(cfg.dataset.root).name)
    cfg.dataset.cache_dir = str(cache)
    cfg.dataset.num_workers = 0
    model = build_model(cfg)
    model.load_state_dict(state["state_dict"])
    return model.eval(), cfg


def signals_on(model: torch.nn.Module, datamodule: object, precision: str = "32-true") -> dict[str, np.ndarray]:
    """Every validation clip's signals (and copy-last's PSNR), as the test loop's records.

    ``precision`` is the run's ``trainer.precision``: a bf16-mixed run is validated under the same bfloat16 autocast
    as its own validation and test stages."""
    records: dict[str, list[np.ndarray]] = {}
    with torch.no_grad(), precisions.autocast(precision, "cpu"):
        for batch in datamodule.val_dataloader():
            batch = model.prepare_batch(batch)  # the loader's uint8 frames -> float32 in [-1, 1]
            values = {k: v.double().numpy() for k, v in model.frame_signals(batch).items()}
            values["copy_last_psnr"] = losses.psnr(batch["frames"][:, -2], batch["frames"][:, -1]).double().numpy()
            values["video_id"] = batch["video_id"].numpy()
            values["index"] = batch["index"].numpy()
            for k, v in values.items():
                records.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in records.items()}


def scores_of(model: torch.nn.Module) -> dict[str, dict[str, float]]:
    """name -> fusion weights: the configured score, each signal alone, and copy-last."""
    out = {f"score {model.score_weights}": dict(model.score_weights)}
    for name in model.signals:
        out[name] = {name: -1.0 if name == "psnr" else 1.0}
    out["copy-last"] = {"copy_last_psnr": -1.0}
    return out


def validate(
    checkpoint: Path,
    data: Path | None,
    cache: Path,
    seeds: list[int],
    smoothings: list[float] = (0.0,),
    val_pseudo: dict | None = None,
) -> dict[str, list[tuple]]:
    """label -> [(micro AUC, macro AUC) per injection seed]; ``val_pseudo`` overrides the run's
    ``dataset.val_pseudo`` keys (the held-out videos stay those of the run)."""
    model, cfg = load(checkpoint, data, cache)
    for key, value in (val_pseudo or {}).items():
        OmegaConf.update(cfg, f"dataset.val_pseudo.{key}", value, force_add=True)
    results: dict[str, list[tuple]] = {}
    for seed in seeds:
        OmegaConf.update(cfg, "dataset.val_pseudo.seed", seed, force_add=True)
        datamodule = build_datamodule(cfg, model)  # a method asking for flow targets gets them
        datamodule.setup("fit")
        videos = datamodule.val_videos_info
        records = signals_on(model, datamodule, precisions.of_run(cfg))
        for index, (name, weights) in enumerate(scores_of(model).items()):
            keys = list(weights)
            per_video = videos_from_records(records, videos, signals=keys)
            # the configured score at the run's own smoothing first: the reference of the paired differences
            for sigma in [model.smoothing] if index == 0 else smoothings:
                result = evaluate(per_video, weights, smoothing=sigma, label_source=VALIDATION_LABELS)
                label = f"{name}, smoothed sigma {sigma:g}" if sigma else name
                results.setdefault(label, []).append((result.auc_micro, result.auc_macro))
    return results


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, default=None, help="folder holding the dataset (paths.data_dir)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="injection seeds")
    parser.add_argument("--report", type=Path, default=None, help="write the table here (Markdown)")
    parser.add_argument(
        "--smoothing", type=float, nargs="+", default=[0.0], help="temporal Gaussian sigmas (frames) to score at"
    )
    parser.add_argument(
        "--object-scale", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
        help="scene-sized pseudo-anomalies: the typical moving object's size times a factor from [LOW, HIGH]",
    )  # fmt: skip
    args = parser.parse_args()
    cache = REPO / ".cache" / "frames"
    val_pseudo = None if args.object_scale is None else {"object_scale": list(args.object_scale)}
    lines = [
        "| checkpoint | score | val micro AUC | val macro AUC | micro AUC − configured score's: mean, injections won |",
        "|---|---|---:|---:|---|",
    ]
    start = time.perf_counter()
    for checkpoint in args.checkpoints:
        results = validate(
            checkpoint.resolve(),
            args.data.resolve() if args.data else None,
            cache,
            args.seeds,
            args.smoothing,
            val_pseudo,
        )
        configured = [p[0] for p in next(iter(results.values()))]
        for name, pairs in results.items():
            micro, macro = [p[0] for p in pairs], [p[1] for p in pairs]
            # paired over the injections: the same pseudo-anomalies, two scores
            diff = [a - b for a, b in zip(micro, configured, strict=True)]
            won = paired_wins(micro, configured)
            paired = (
                "(the configured score)"
                if name.startswith("score ")
                else f"{statistics.mean(diff):+.4f}, {won}/{len(diff)}"
            )
            row = f"| {checkpoint} | {name} | {spread(micro)} | {spread(macro)} | {paired} |"
            lines.append(row)
            print(row, flush=True)
    seconds = time.perf_counter() - start
    table = "\n".join(lines)
    header = (
        "Validation AUC on pseudo-anomalies injected into each run's held-out training videos"
        + (f" (scene-sized: object_scale {list(args.object_scale)})" if args.object_scale else "")
        + "; injection seeds "
        f"{args.seeds} (mean ± standard deviation over them); per-video min-max; {seconds:.0f} s. No test label read."
    )
    print(header)
    if args.report:
        args.report.write_text(f"{header}\n\n{table}\n")


if __name__ == "__main__":
    main()
