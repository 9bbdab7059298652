"""The exporters behind ``python -m vad.export`` (:mod:`vad.export`): TorchScript and ONNX files of a trained
detector's per-frame signals, with its calibration and preprocessing (``vad.json``), each loaded back and checked at
a batch size it was not exported with. See :mod:`vad.export` for the formats and :mod:`vad.inference.exported` for
loading.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from vad.errors import ConfigError
from vad.inference.exported import METADATA_KEY, ONNX_INSTALL, ExportedDetector
from vad.inference.spec import InputSpec
from vad.methods.base import VADModule

#: the packages of the ``onnx`` extra that ONNX export uses (onnxruntime: the exported model is checked with it)
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class SignalModel(nn.Module):
    """``frames (B, T, C, H, W) -> signals (B, S)``: the method's ``frame_signals`` stacked in ``signals`` order."""

    def __init__(self, model: VADModule) -> None:
        super().__init__()
        # Held outside the module tree: tracing walks the attributes of submodules, and a LightningModule's
        # ``trainer`` attribute raises outside a Trainer. The weights are recorded in the traced graph as constants.
        object.__setattr__(self, "_model", model.eval().requires_grad_(False))
        self.names = list(model.signals)
        self.method = type(model).__name__
        self.eval()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        signals = self._model.frame_signals({"frames": frames})
        return torch.stack([signals[name].float() for name in self.names], dim=1)


def metadata(model: VADModule, run_cfg: DictConfig) -> dict[str, Any]:
    """The ``vad.json`` of an export: the signals, the score weights, the calibration, the input spec of the run
    (:meth:`InputSpec.to_metadata`) and the method."""
    return {
        "signals": list(model.signals),
        "score_weights": dict(model.score_weights),
        "calibration": None if model.calibration is None else model.calibration.to_dict(),
        "input": InputSpec.of_run(run_cfg).to_metadata(),
        "method": type(model).__name__,
    }


def _checked_example(model: VADModule, run_cfg: DictConfig, batch: int) -> tuple[dict[str, Any], torch.Tensor]:
    """The metadata and a batch of random clips to export with; refuses a method whose signals need more than frames."""
    if model.clip_requests():
        raise ConfigError(
            f"{type(model).__name__} needs {sorted(model.clip_requests())} besides the frames (computed by OpenCV), "
            "so its signals cannot be exported as a function of the frames alone"
        )
    info = metadata(model, run_cfg)
    spec = InputSpec.from_metadata(info["input"])
    example = torch.rand(batch, spec.clip_len, spec.channels, *spec.size) * 2 - 1
    return info, example


def export_torchscript(model: VADModule, run_cfg: DictConfig, path: Path, batch: int = 2) -> Path:
    """Trace the signal model on a batch of random clips and save it with its metadata, checked at another batch size;
    returns ``path``."""
    info, example = _checked_example(model, run_cfg, batch)
    wrapper = SignalModel(model)
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, example, check_trace=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(path), _extra_files={METADATA_KEY: json.dumps(info)})
    _check_another_batch(path, "torchscript", wrapper, example)
    return path


def _check_another_batch(path: Path, fmt: str, wrapper: SignalModel, example: torch.Tensor) -> None:
    """Load the written file as ``vad.score`` does and run it at a batch size it was not exported with: a graph that
    fixed the batch size (the exporters record Python loops and list lengths over the batch as constants; r-GAN's
    are such graphs in torch 2.13) gives the wrong shape or values, and the file is removed with a one-line error."""
    frames = torch.cat([example, example[:1]])
    with torch.no_grad():
        expected = wrapper(frames)
    try:
        got = ExportedDetector.load(path, fmt=fmt)(frames)
        problem = None
        if not torch.allclose(got, expected, rtol=1e-3, atol=1e-3, equal_nan=True):
            problem = f"largest difference {float((got - expected).abs().nan_to_num().max()):.3g}"
    except Exception as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        # the TorchScript interpreter's first line is a preamble, its last the failure
        problem = lines[-1] if lines[0].startswith("The following operation failed") else lines[0]
    if problem is not None:
        path.unlink(missing_ok=True)
        raise ConfigError(
            f"{wrapper.method}: the exported {fmt} model does not give the signals at batch size "
            f"{len(frames)} ({problem}): its graph fixes the batch size, so it is not exportable in this format yet"
        )


def require_onnx(*modules: str) -> None:
    """A one-line ConfigError naming the install command when a package of the ``onnx`` extra is missing."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"ONNX needs the onnx extra ({', '.join(missing)} missing): {ONNX_INSTALL}")


#: loggers of the ONNX exporter and its level while it runs: under a Hydra job (root logger at INFO) onnxscript's and
#: onnx_ir's optimisation passes log a line per node they fold; without torchvision (which vad does not use) torch warns
#: once per torchvision operator it cannot register
EXPORTER_LOGGERS = {
    "onnxscript": logging.WARNING,
    "onnx_ir": logging.WARNING,
    "torch.onnx._internal.exporter._registration": logging.ERROR,
}


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's own chatter off (:data:`EXPORTER_LOGGERS`, torch.export's pytree FutureWarning); its errors and
    warnings about the model stay."""
    loggers = {logging.getLogger(name): level for name, level in EXPORTER_LOGGERS.items()}
    before = {logger: logger.level for logger in loggers}
    try:
        for logger, level in loggers.items():
            logger.setLevel(max(level, logger.getEffectiveLevel()))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            yield
    finally:
        for logger, level in before.items():
            logger.setLevel(level)


def export_onnx(model: VADModule, run_cfg: DictConfig, path: Path, batch: int = 2) -> Path:
    """Export the signal model to ONNX (input ``frames`` (B, T, C, H, W), output ``signals`` (B, S), B dynamic) with
    the metadata in its ``metadata_props``, checked with onnxruntime at another batch size; returns ``path``. The
    torch.export-based exporter: the TorchScript-based one (``dynamo=False``) fails on FFP's and MNAD's graphs in torch
    2.13."""
    info, example = _checked_example(model, run_cfg, batch)
    require_onnx(*ONNX_PACKAGES)
    wrapper = SignalModel(model)
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=["frames"],
            output_names=["signals"],
            dynamic_shapes={"frames": {0: torch.export.Dim("batch", min=1)}},
            verbose=False,
        )
    assert program is not None
    program.model.metadata_props[METADATA_KEY] = json.dumps(info)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    _check_another_batch(path, "onnx", wrapper, example)
    return path


def load_exported(path: Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """An exported TorchScript module and its metadata."""
    extra = {METADATA_KEY: ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra[METADATA_KEY])


EXPORTERS = {"torchscript": export_torchscript, "onnx": export_onnx}
