"""A detector exported by ``vad.export`` (TorchScript ``model.pt`` or ONNX ``model.onnx``), used like a trained one.

    detector = ExportedDetector.load("model.onnx")             # or model.pt; reads the file's vad.json
    signals = detector.test_signals({"frames": clips})         # clips (B, T, C, H, W) uint8 or in [-1, 1] -> (B,)
    scorer = StreamScorer(detector, detector.spec, threshold=detector.calibration.threshold(DEFAULT_FPR))
    # DEFAULT_FPR: vad.evaluation.calibration's 1% false-alarm rate

It offers what :class:`vad.inference.scorer.StreamScorer` asks of a :class:`~vad.methods.base.VADModule` (the
signals, the score weights, the calibration, no extra clip inputs, no test-time state, no sample panels: an overlay
has no heat map) and the input spec it was exported with (:class:`vad.inference.spec.InputSpec`), so ``vad.score
ckpt_path=model.pt|model.onnx`` runs without the training code's checkpoint or config. The signals are the exported
stateless ones (``frame_signals``: MNAD without its test-time memory update). ONNX files run
on onnxruntime (the ``onnx`` extra).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vad.data.batches import frames_to_float
from vad.errors import ConfigError, DataError
from vad.evaluation.calibration import Calibration
from vad.inference.spec import METADATA_KEYS, InputSpec

#: the suffixes of the files ``vad.export`` writes, and their formats
SUFFIXES = {".pt": "torchscript", ".onnx": "onnx"}
#: the key of an exported file's metadata (a TorchScript extra file, an entry of the ONNX model's metadata_props)
METADATA_KEY = "vad.json"
#: clips per forward pass when ``vad.score``'s ``batch_size`` is null (an exported file has no dataset config)
DEFAULT_BATCH_SIZE = 32
#: what installs the ``onnx`` extra (onnx and onnxscript for ``vad.export format=onnx``, onnxruntime to run it)
ONNX_INSTALL = 'pip install -e ".[onnx]"'


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` names a file of ``vad.export`` (by its suffix) rather than a training checkpoint."""
    return Path(path).suffix.lower() in SUFFIXES


def _reason(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _metadata(text: str | None, path: Path) -> dict[str, Any]:
    """The checked ``vad.json`` of an exported file."""
    hint = "export the checkpoint again with python -m vad.export"
    if not text:
        raise ConfigError(f"ckpt_path: {path} carries no {METADATA_KEY} metadata, so it was not written by vad.export; "
                          f"{hint}")  # fmt: skip
    try:
        info = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"ckpt_path: {path}: its {METADATA_KEY} is not JSON ({error}); {hint}") from None
    needed = {"signals", "score_weights", "calibration", "input"}
    missing = sorted(needed - set(info)) + sorted(set(METADATA_KEYS) - set(info.get("input") or {}))
    if missing:
        raise ConfigError(f"ckpt_path: {path}: its {METADATA_KEY} lacks {missing}; {hint}")
    return info


def _load_torchscript(path: Path, device: torch.device) -> tuple[Callable[[torch.Tensor], torch.Tensor], str | None]:
    extra = {METADATA_KEY: ""}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as error:
        raise ConfigError(
            f"ckpt_path: {path} is not a TorchScript model ({_reason(error)}); write one with python -m vad.export "
            "ckpt_path=<run>/checkpoints/last.ckpt, or pass a .ckpt"
        ) from None
    module.eval()

    def run(frames: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(frames.to(device=device, dtype=torch.float32))

    return run, extra[METADATA_KEY] or None


def _load_onnx(path: Path, device: torch.device) -> tuple[Callable[[torch.Tensor], torch.Tensor], str | None]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(f"ckpt_path: {path}: running an ONNX model needs onnxruntime: {ONNX_INSTALL}") from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError(
                f"device={device}: this onnxruntime cannot use CUDA (install onnxruntime-gpu), or score with device=cpu"
            )
        providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as error:
        raise ConfigError(
            f"ckpt_path: {path} is not an ONNX model ({_reason(error)}); write one with python -m vad.export "
            "ckpt_path=<run>/checkpoints/last.ckpt format=onnx"
        ) from None
    name = session.get_inputs()[0].name

    def run(frames: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(frames.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(session.run(None, {name: array})[0])

    return run, session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)


class ExportedDetector:
    """A TorchScript or ONNX file of ``vad.export`` with its metadata (see the module docstring).

    Attributes: ``signals`` (the output columns), ``score_weights``, ``calibration`` (None when the exported
    checkpoint had none), ``spec`` (the :class:`~vad.inference.spec.InputSpec` of the clips and frames the model
    expects), ``method`` (its class name), ``format``, ``path``, ``device`` (where its
    inputs go: the CPU for ONNX, whose runtime places them itself).
    """

    def __init__(
        self,
        run: Callable[[torch.Tensor], torch.Tensor],
        info: Mapping[str, Any],
        *,
        path: Path,
        fmt: str,
        device: torch.device,
    ) -> None:
        self._run = run
        self.info = dict(info)
        self.path = path
        self.format = fmt
        self.device = device
        self.method = str(info.get("method", "exported"))
        self.signals = tuple(str(s) for s in info["signals"])
        self.score_weights = {str(k): float(v) for k, v in info["score_weights"].items()}
        self.calibration = None if info["calibration"] is None else Calibration.from_dict(info["calibration"])
        self.spec = InputSpec.from_metadata(info["input"])

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", fmt: str | None = None) -> ExportedDetector:
        """Load ``model.pt`` (TorchScript) or ``model.onnx`` (``fmt``: ``torchscript`` / ``onnx``, by default from the
        suffix); a file that is neither, or that lacks the metadata, is a one-line ConfigError naming it."""
        path = Path(path)
        fmt = fmt or SUFFIXES.get(path.suffix.lower())
        if fmt not in SUFFIXES.values():
            raise ConfigError(f"ckpt_path: {path} is not an exported model ({', '.join(SUFFIXES)})")
        if not path.is_file():
            raise ConfigError(f"ckpt_path: {path} not found")
        device = torch.device(device)
        run, text = (_load_torchscript if fmt == "torchscript" else _load_onnx)(path, device)
        if fmt == "onnx":
            device = torch.device("cpu")
        return cls(run, _metadata(text, path), path=path, fmt=fmt, device=device)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, T, C, H, W)`` float32 in [-1, 1], or uint8 as the loaders ship them (converted on
        :attr:`device` by :func:`vad.data.batches.frames_to_float`, as a trained module does) -> raw signals ``(B, S)``
        float32 in ``signals`` order."""
        values = self._run(frames_to_float(frames.to(self.device)))
        if values.ndim != 2 or values.shape[1] != len(self.signals):
            raise DataError(
                f"{self.path}: gave signals of shape {tuple(values.shape)}, but its {METADATA_KEY} names "
                f"{len(self.signals)} ({', '.join(self.signals)}); export it again"
            )
        return values

    # ------------------------------------------------------------------ what StreamScorer uses of a VADModule
    def test_signals(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Per-clip raw signals of ``batch["frames"]``: name -> (B,) float32 (stateless)."""
        values = self(batch["frames"])
        return {name: values[:, i] for i, name in enumerate(self.signals)}

    frame_signals = test_signals

    def sample_panels(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """No panels: the exported model gives signals only (an overlay shows no heat map)."""
        return {}

    def clip_requests(self) -> dict[str, Any]:
        """Nothing besides the frames (``vad.export`` refuses methods that need more)."""
        return {}

    def begin_test_state(self) -> None:
        """No test-time state (the exported signals are stateless)."""

    def on_test_video_start(self, video_id: int) -> None:
        """No per-video state."""

    def eval(self) -> ExportedDetector:
        return self

    def __repr__(self) -> str:
        return f"ExportedDetector({self.method}, {self.format}, {self.path}, signals={list(self.signals)})"
