"""Calibrate a trained detector for streams and alerts, on demand (``vad.train`` does it after training).

    python -m vad.calibrate ckpt_path=<run>/checkpoints/last.ckpt [overwrite=true] [smoothing=2]
    python -m vad.calibrate ckpt_path=... overwrite=true input=<normal footage: video, folder of videos, camera>

Each signal's distribution on held-out normal frames (the run's validation videos, original frames; or the last
training frames when the run held none out) and the calibrated scores of those frames are written into the
checkpoint (``vad_calibration``, :mod:`vad.evaluation.calibration`); ``vad.score`` normalises by them and sets
alert thresholds for a false-alarm rate. With ``input=`` the calibration frames are instead the normal footage given
(what ``vad.score`` reads: a video, a frame folder, a folder of videos, a camera or a stream until it stops or
Ctrl-C), scored exactly as ``vad.score`` scores it (its raw signals are kept in the run folder,
``footage/<input>/``): more normal frames of the camera the detector will watch than the few held-out training
videos, and no training data needed. ``smoothing``: the causal smoothing (sigma, frames) of the stream scores, which
the thresholds are computed for (null: the run's ``model.smoothing``; 0: frame by frame). A checkpoint that already
holds a calibration is changed only with ``overwrite=true``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from vad.app.cli import run_hydra
from vad.errors import ConfigError

if TYPE_CHECKING:
    from vad.evaluation.calibration import Calibration
    from vad.methods.base import VADModule

# torch and the modules importing it load inside the functions: --help and a mistyped key are answered first.


def calibrate_model(model: VADModule, datamodule: Any, smoothing: float | None = None) -> dict[str, Any]:
    """Fit the model's calibration on the datamodule's calibration frames (training means first, when the method
    needs them and they are missing), for stream scores smoothed causally with ``smoothing`` frames (None: the
    run's ``model.smoothing``); returns a summary."""
    if not model.training_means_ready:
        model.compute_training_means(datamodule.training_frames_dataloader())
    loader, source = datamodule.calibration_dataloader()
    return _summary(model.calibrate(loader, source, smoothing))


def _threshold_key() -> str:
    """The summary's key of the threshold at the default false-alarm rate (``threshold_fpr_0.01``)."""
    from vad.evaluation.calibration import DEFAULT_FPR

    return f"threshold_fpr_{DEFAULT_FPR:g}"


def _summary(calibration: Calibration) -> dict[str, Any]:
    from vad.evaluation.calibration import DEFAULT_FPR

    return {
        "source": calibration.source,
        "frames": calibration.frames,
        "smoothing": calibration.smoothing,
        _threshold_key(): calibration.threshold(DEFAULT_FPR),
    }


def calibrate_on_footage(
    model: VADModule,
    run_cfg: DictConfig,
    footage: str,
    out_dir: Path,
    smoothing: float | None = None,
    precision: str = "32-true",
) -> dict[str, Any]:
    """Fit the model's calibration on the normal ``footage`` (any ``vad.score`` input), each input scored as
    ``vad.score`` scores it (the input spec and batches of its run config ``run_cfg``, in ``precision``) into
    ``out_dir/<input>``; returns a summary like :func:`calibrate_model`'s."""
    import csv

    import numpy as np

    from vad.errors import DataError
    from vad.evaluation.calibration import Calibration
    from vad.evaluation.smoothing import smoothing_or
    from vad.inference.scorer import StreamScorer
    from vad.inference.sources import open_inputs
    from vad.inference.spec import InputSpec, eval_batch_size

    sources = open_inputs(footage)
    scorer = StreamScorer(
        model,
        InputSpec.of_run(run_cfg),
        batch_size=eval_batch_size(run_cfg),
        threshold=None,
        calibrated=False,
        smoothing=0.0,
        precision=precision,
    )
    columns: dict[str, list[float]] = {name: [] for name in model.signals}
    videos: list[int] = []
    for number, source in enumerate(sources):
        out = out_dir / source.name
        scorer.run(source, out, progress=True)
        with (out / "scores.csv").open() as f:
            for row in csv.DictReader(f):
                for name in columns:
                    columns[name].append(float(row[name]))  # written as repr: the float64 values exactly
                videos.append(number)
    if not videos:
        raise DataError(f"input={footage}: no frame could be scored (an input needs {scorer.spec.span} frames or more)")
    names = ", ".join(s.name for s in sources)
    model.calibration = Calibration.fit(
        {name: np.asarray(values) for name, values in columns.items()},
        model.score_weights,
        source=f"normal footage {footage} ({names})",
        smoothing=smoothing_or(smoothing, model.smoothing),
        videos=np.asarray(videos),
    )
    return _summary(model.calibration)


def write_calibration(ckpt: Path, model: VADModule) -> None:
    """Put the model's calibration (and its training means) into the checkpoint file, atomically; nothing else in
    it changes."""
    import torch

    from vad.checkpoint_io import AtomicCheckpointIO
    from vad.evaluation.calibration import CHECKPOINT_KEY

    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert model.calibration is not None
    checkpoint[CHECKPOINT_KEY] = model.calibration.to_dict()
    if model.training_mean_names:
        checkpoint["state_dict"]["training_means"] = model.training_means.detach().cpu().clone()
    AtomicCheckpointIO().save_checkpoint(checkpoint, ckpt)


def calibrate(cfg: DictConfig) -> dict[str, Any]:
    from vad import precision
    from vad.app.build import build_datamodule, model_from_checkpoint
    from vad.evaluation.calibration import DEFAULT_FPR
    from vad.evaluation.smoothing import given_smoothing

    if not cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path: give the checkpoint to calibrate (ckpt_path=<run>/checkpoints/last.ckpt)")
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path: {ckpt} not found; pass a .ckpt file")
    smoothing = given_smoothing(cfg.get("smoothing"))  # before the checkpoint and the data are loaded
    if ckpt.suffix.lower() in (".pt", ".onnx"):
        raise ConfigError(f"ckpt_path: {ckpt} is an exported model; calibrate its .ckpt, then export it again")
    requested = cfg.get("precision")
    if requested is not None and str(requested) not in (*precision.PRECISIONS, precision.AUTO):
        raise ConfigError(f"precision={requested} is not one of {[*precision.PRECISIONS, precision.AUTO]}")
    model, run_cfg = model_from_checkpoint(ckpt, cfg)
    # as vad.score will score it: the training precision where it is native, float32 where bf16 would be emulated
    runs_in, choice = precision.for_scoring(precision.of_run(run_cfg), model.device.type, requested)
    if choice is not None:
        print(choice)
    if model.calibration is not None and not cfg.get("overwrite", False):
        raise ConfigError(
            f"ckpt_path: {ckpt} already holds a calibration ({model.calibration.source}); overwrite=true replaces it"
        )
    if cfg.get("input") is not None:
        if not model.training_means_ready:
            raise ConfigError(
                f"ckpt_path: {ckpt} holds no training means (its score needs them); calibrate it once without "
                "input= (which computes them from its training data), then on the footage"
            )
        from vad.app.cli import run_directory

        # as vad.score scores the footage
        summary = calibrate_on_footage(model, run_cfg, str(cfg.input), run_directory() / "footage", smoothing, runs_in)
    else:
        datamodule = build_datamodule(run_cfg, model)
        datamodule.prepare_data()
        datamodule.setup("fit")
        # in the precision the detector was trained, tested and is scored in (as vad.train calibrates it)
        with precision.autocast(runs_in, model.device.type):
            summary = calibrate_model(model, datamodule, smoothing)
    write_calibration(ckpt, model)
    print(
        f"calibrated on {summary['frames']} frames ({summary['source']}); scores smoothed causally over "
        f"sigma={summary['smoothing']:g} frames; threshold at a {DEFAULT_FPR:.0%} false-alarm rate: "
        f"{summary[_threshold_key()]:.3f} -> {ckpt}"
    )
    return summary


def main() -> None:
    run_hydra("calibrate", calibrate)


if __name__ == "__main__":
    main()
