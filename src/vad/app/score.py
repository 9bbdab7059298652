"""Score any video, frame folder, folder of videos, camera or stream with a trained detector.

    python -m vad.score ckpt_path=<run>/checkpoints/last.ckpt input=clip.mp4 [overlay=true] [threshold.fpr=0.01]
    python -m vad.score ckpt_path=... input=0            # camera 0: frames/s and latency on the console
    vad-score ckpt_path=... input=rtsp://camera/stream
    python -m vad.score ckpt_path=<export run>/model.onnx input=clip.mp4      # a model.pt / model.onnx of vad.export

Outputs in the run folder (``hydra.run.dir``; one sub-folder per input when there are several): ``scores.csv``
(``frame, time, <every raw signal>, score, alert``: ``frame`` the index in the input, ``score`` the calibrated
score, smoothed over past frames as the calibration says), ``events.json`` (anomalous intervals: start / end frame
and time, peak score), ``score.png`` and, with
``overlay=true``, ``overlay.avi`` (frame + error heat map + scrolling score bar, one frame per input frame).
See :mod:`vad.inference.scorer` (reading, batching) and :mod:`vad.evaluation.calibration` (scores and thresholds).
``ckpt_path`` is a training checkpoint (``.ckpt``) or a file of ``vad.export`` (``.pt`` TorchScript, ``.onnx``:
:mod:`vad.inference.exported`), which carries its signals, weights, calibration and input spec; an exported model
gives the stateless signals (MNAD without its test-time memory update) and no heat map in the overlay.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from vad import precision as precisions
from vad.app.cli import run_directory, run_hydra
from vad.errors import ConfigError

if TYPE_CHECKING:
    from vad.inference.exported import ExportedDetector
    from vad.inference.spec import InputSpec
    from vad.methods.base import VADModule

# torch, OpenCV and the models load inside the functions: --help and a mistyped key are answered first.
log = logging.getLogger(__name__)


def torch_device_type(model: Any) -> str:
    """``cpu`` or ``cuda``: where a detector (a VADModule or an exported model) runs."""
    device = getattr(model, "device", "cpu")
    return "cuda" if str(getattr(device, "type", device)).startswith("cuda") else "cpu"


def load_detector(ckpt: Path, cfg: DictConfig) -> tuple[VADModule | ExportedDetector, InputSpec, int, str]:
    """The detector of ``ckpt`` on ``cfg.device`` (a training checkpoint, or a ``.pt`` / ``.onnx`` of vad.export, by
    its suffix), the input spec of its clips and frames, its clips per forward pass (``cfg.batch_size``, default the
    batches of vad.evaluate) and the precision it was trained and tested in (an exported model: float32)."""
    from vad.app.build import model_from_checkpoint
    from vad.inference.exported import DEFAULT_BATCH_SIZE, ExportedDetector, is_exported
    from vad.inference.spec import InputSpec, eval_batch_size

    device = cfg.get("device", "cpu")
    if is_exported(ckpt):
        detector = ExportedDetector.load(ckpt, device=device)
        return detector, detector.spec, int(cfg.batch_size or DEFAULT_BATCH_SIZE), "32-true"
    model, run_cfg = model_from_checkpoint(ckpt, cfg)
    model.to(device)
    return model, InputSpec.of_run(run_cfg), eval_batch_size(run_cfg, cfg.batch_size), precisions.of_run(run_cfg)


def score(cfg: DictConfig) -> dict[str, Any]:
    from vad.evaluation.smoothing import given_smoothing
    from vad.inference.exported import ExportedDetector
    from vad.inference.scorer import StreamScorer
    from vad.inference.sources import open_inputs

    if not cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path: give a trained detector's checkpoint (ckpt_path=<run>/checkpoints/last.ckpt)")
    if cfg.get("input") is None:
        raise ConfigError("input: give a video file, a frame folder, a folder of videos, a camera index or a URL")
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path: {ckpt} not found; pass a .ckpt file, or a model.pt / model.onnx of vad.export")
    precision = cfg.get("precision")
    if precision is not None and str(precision) not in (*precisions.PRECISIONS, precisions.AUTO):
        raise ConfigError(
            f"precision={precision} is not one of {[*precisions.PRECISIONS, precisions.AUTO]} (float32, bfloat16 "
            "autocast, or auto: bfloat16 where the machine has bfloat16 units)"
        )
    # a bad value is refused before the detector loads; one its calibration does not hold for, by the StreamScorer
    smoothing = given_smoothing(cfg.get("smoothing"))
    run_dir = run_directory()
    model, spec, batch_size, trained_in = load_detector(ckpt, cfg)
    # null: as the detector was trained and tested where that is native, float32 where bfloat16 would be emulated
    precision, choice = precisions.for_scoring(trained_in, torch_device_type(model), precision)
    if choice is not None:
        log.info(choice)
    if precision != "32-true" and isinstance(model, ExportedDetector):
        raise ConfigError(
            f"precision={precision}: {ckpt} is an exported model, which runs as it was exported; score its training "
            "checkpoint for bfloat16, or drop precision="
        )
    raw = bool(cfg.get("raw", False))
    threshold = cfg.threshold.get("value")
    if threshold is None and not raw:
        if model.calibration is None:
            if isinstance(model, ExportedDetector):
                fix = "calibrate its checkpoint (python -m vad.calibrate) and export it again"
            else:
                fix = f"run `python -m vad.calibrate ckpt_path={ckpt}` first"
            raise ConfigError(
                f"ckpt_path: {ckpt} holds no calibration; {fix}, or score with raw=true threshold.value=<number>"
            )
        threshold = model.calibration.threshold(float(cfg.threshold.fpr))
    sources = open_inputs(cfg.input, fps=cfg.get("fps"))
    scorer = StreamScorer(
        model,
        spec,
        batch_size=batch_size,
        threshold=None if threshold is None else float(threshold),
        calibrated=not raw,
        smoothing=smoothing,
        event_gap=int(cfg.get("event_gap", 0)),
        precision=precision,
    )
    results = {}
    for source in sources:
        out = run_dir if len(sources) == 1 else run_dir / source.name
        summary = scorer.run(source, out, overlay=bool(cfg.overlay), progress=bool(cfg.progress))
        results[source.name] = {
            "frames": summary.frames,
            "scored": summary.scored,
            "alerts": summary.alerts,
            "events": len(summary.events),
            "frames_per_second": round(summary.fps, 2),
            "stopped": summary.stopped,
            "warning": summary.warning,
            "files": summary.files,
        }
        print(
            f"{source.name}: {summary.frames} frames, {summary.scored} scored, {summary.alerts} alerts in "
            f"{len(summary.events)} events ({summary.fps:.1f} frames/s, {summary.stopped}) -> {out}"
        )
    record = {
        "checkpoint": str(ckpt),
        "threshold": threshold,
        "smoothing": scorer.smoothing,
        "precision": precision,
        "precision_choice": choice,
        "inputs": results,
    }
    (run_dir / "score_summary.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    run_hydra("score", score)


if __name__ == "__main__":
    main()
