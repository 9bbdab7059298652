"""Export a trained detector's per-frame signals as a TorchScript module, with what it expects and its calibration.

    python -m vad.export ckpt_path=<run>/checkpoints/last.ckpt format=torchscript      # -> <run folder>/model.pt

The exported module maps clips ``(B, T, C, H, W)`` float32 in [-1, 1] (``uint8 / 127.5 - 1``, frames resized to the
working size with the dataset's interpolation, grey or RGB) to the method's raw signals ``(B, S)`` in the order of
``signals``. The file carries ``vad.json`` (``torch.jit.load(path, _extra_files={"vad.json": ""})``): the signals,
the score weights, the calibration (``vad.calibration``), and the preprocessing. The signals are the stateless ones
(``frame_signals``: MNAD without its test-time memory update). Methods that need flow targets from OpenCV (AMC) are
refused: their inputs are not frames alone. ONNX export is not available yet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from vad.build import model_from_checkpoint
from vad.cli import run_hydra
from vad.errors import ConfigError
from vad.methods.base import VADModule
from vad.train import run_directory

FORMATS = ("torchscript",)


class SignalModel(nn.Module):
    """``frames (B, T, C, H, W) -> signals (B, S)``: the method's ``frame_signals`` stacked in ``signals`` order."""

    def __init__(self, model: VADModule) -> None:
        super().__init__()
        # Held outside the module tree: tracing walks the attributes of submodules, and a LightningModule's
        # ``trainer`` attribute raises outside a Trainer. The weights are recorded in the traced graph as constants.
        object.__setattr__(self, "_model", model.eval().requires_grad_(False))
        self.names = list(model.signals)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        signals = self._model.frame_signals({"frames": frames})
        return torch.stack([signals[name].float() for name in self.names], dim=1)


def metadata(model: VADModule, run_cfg: DictConfig) -> dict[str, Any]:
    data = run_cfg.dataset
    return {
        "signals": list(model.signals),
        "score_weights": dict(model.score_weights),
        "calibration": None if model.calibration is None else model.calibration.to_dict(),
        "input": {
            "layout": "B, T, C, H, W",
            "clip_len": int(run_cfg.model.clip_len),
            "frame_stride": int(data.get("frame_stride", 1)),
            "image_size": [int(s) for s in data.image_size],
            "channels": int(data.channels),
            "colour": "grey" if int(data.channels) == 1 else "RGB",
            "interpolation": str(data.get("interpolation", "linear")),
            "values": "uint8 / 127.5 - 1, in [-1, 1]",
        },
        "method": type(model).__name__,
    }


def export_torchscript(model: VADModule, run_cfg: DictConfig, path: Path, batch: int = 2) -> Path:
    """Trace the signal model on a batch of random clips and save it with its metadata; returns ``path``."""
    if model.clip_requests():
        raise ConfigError(
            f"{type(model).__name__} needs {sorted(model.clip_requests())} besides the frames (computed by OpenCV), "
            "so its signals cannot be exported as a function of the frames alone"
        )
    info = metadata(model, run_cfg)
    size = info["input"]
    example = torch.rand(batch, size["clip_len"], size["channels"], *size["image_size"]) * 2 - 1
    wrapper = SignalModel(model)
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, example, check_trace=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(path), _extra_files={"vad.json": json.dumps(info)})
    return path


def load_exported(path: Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """An exported module and its metadata."""
    extra = {"vad.json": ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra["vad.json"])


def export(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path: give the checkpoint to export (ckpt_path=<run>/checkpoints/last.ckpt)")
    fmt = cfg.get("format", "torchscript")
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt} is not one of {list(FORMATS)} (ONNX export is not available yet)")
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path: {ckpt} not found; pass a .ckpt file")
    model, run_cfg = model_from_checkpoint(ckpt, cfg)
    out = run_directory() / "model.pt"
    export_torchscript(model, run_cfg, out)
    print(f"exported {type(model).__name__} ({', '.join(model.signals)}) -> {out}")
    return {"path": str(out)}


def main() -> None:
    run_hydra("export", export)


if __name__ == "__main__":
    main()
