"""Export a trained detector's per-frame signals as TorchScript or ONNX, with what it expects and its calibration.

    python -m vad.export ckpt_path=<run>/checkpoints/last.ckpt                    # -> <run folder>/model.pt
    python -m vad.export ckpt_path=<run>/checkpoints/last.ckpt format=onnx        # -> <run folder>/model.onnx

The exported model maps clips ``(B, T, C, H, W)`` float32 in [-1, 1] (``uint8 / 127.5 - 1``, frames resized to the
working size with the dataset's interpolation, grey or RGB) to the method's raw signals ``(B, S)`` in the order of
``signals``, for any batch size B. The file carries ``vad.json``: the signals, the score weights, the calibration
(``vad.evaluation.calibration``), and the input spec (``input``: :class:`vad.inference.spec.InputSpec`). TorchScript
keeps it as an extra file (``torch.jit.load(path, _extra_files={"vad.json": ""})``), ONNX in the model's
``metadata_props`` (``onnxruntime.InferenceSession(path).get_modelmeta().custom_metadata_map["vad.json"]``); the ONNX
input is ``frames``, the output ``signals``, the batch axis dynamic. ``vad.score ckpt_path=model.pt|model.onnx``
scores with either (:mod:`vad.inference.exported`). The signals are the stateless ones (``frame_signals``: MNAD
without its test-time memory update). Methods that need flow targets from OpenCV (AMC) are refused: their inputs are
not frames alone. Every file is loaded back (:mod:`vad.inference.exported`) and run at a batch size it was not
exported with; one whose graph fixed the batch size (r-GAN's and r-GAN*'s in torch 2.13, both formats) is removed
and refused in one line.

ONNX export uses the torch.export-based exporter (``torch.onnx.export(..., dynamo=True)``) and needs the ``onnx``
extra (``pip install -e ".[onnx]"``: onnx, onnxscript, and onnxruntime to run the result).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vad.app.cli import run_directory, run_hydra
from vad.errors import ConfigError

# The exporters (torch, onnx) load inside export(): --help and a mistyped key are answered first (see vad.train).
FORMATS = ("torchscript", "onnx")
#: the file each format writes into the run folder
FILE_NAMES = {"torchscript": "model.pt", "onnx": "model.onnx"}


def export(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path: give the checkpoint to export (ckpt_path=<run>/checkpoints/last.ckpt)")
    fmt = cfg.get("format", "torchscript")
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt} is not one of {list(FORMATS)}")
    from vad.inference import exporters

    if fmt == "onnx":
        exporters.require_onnx(*exporters.ONNX_PACKAGES)  # before loading the checkpoint
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path: {ckpt} not found; pass a .ckpt file")
    from vad.app.build import model_from_checkpoint

    model, run_cfg = model_from_checkpoint(ckpt, cfg)
    out = run_directory() / FILE_NAMES[fmt]
    exporters.EXPORTERS[fmt](model, run_cfg, out)
    print(f"exported {type(model).__name__} ({', '.join(model.signals)}) -> {out}")
    return {"path": str(out)}


def main() -> None:
    run_hydra("export", export)


if __name__ == "__main__":
    main()
