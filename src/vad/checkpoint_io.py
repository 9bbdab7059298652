"""The suite's checkpoint files: written atomically, read and checked in one place, and the key of the run config they
carry (:data:`CONFIG_KEY`, written by ``vad.methods.base``, read here).

    trainer = L.Trainer(plugins=[AtomicCheckpointIO()])     (vad.app.build.build_trainer always adds it)

Lightning's own save stages the file in the system temp folder and moves it into place; when that folder is on
another file system (a tmpfs /tmp, a node-local disk) the move is a copy, and a run killed during the copy leaves a
truncated ``last.ckpt`` that cannot be resumed. Here the file is written next to its destination and renamed over
it (``os.replace``, atomic within one file system).

Reading a checkpoint a user names (``ckpt_path=``) goes through :func:`read_checkpoint` and :func:`check_fits`
(``vad.train`` resuming, ``vad.evaluate``): a file that is not a checkpoint of this suite, or one whose weights do not
fit the model, is refused in one line that says which, instead of PyTorch's unpickling errors (with their advice to
load untrusted files with ``weights_only=False``) or Lightning's multi-line ``load_state_dict`` report. The
comparison behind it (:func:`compare_state`) serves every "does not fit" error, FlowNet2-SD's weights included.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor, nn

from vad.errors import ConfigError
from vad.io import atomic_path

#: checkpoint key holding {"config": resolved run config, "choices": config-group choices}
CONFIG_KEY = "vad_config"
_EXAMPLES = 2  # keys named per kind of mismatch


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose ``save_checkpoint`` writes a temporary file in the target folder, then renames it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def _unreadable(exc: Exception, zipped: bool) -> str:
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if refused:
        return f"it holds pickled {refused.group(1)} objects, which a weights-only load refuses"
    if not zipped:
        return "torch.load cannot read it: not a complete file written by torch.save"
    return f"torch.load cannot read it: a damaged or foreign archive, {type(exc).__name__}"


def read_checkpoint(path: str | Path, what: str = "ckpt_path") -> dict[str, Any]:
    """The contents of a checkpoint written by ``vad.train``, loaded safely (``weights_only``; tensors memory-mapped,
    so reading a large file costs little); a ConfigError in one line, naming ``what`` (the config key) and the file,
    when it is not one: missing, empty, not a torch file, not a Lightning checkpoint, or written without the run
    config this suite stores (another program, or an incompatible version of the suite)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}: checkpoint {path} not found")
    if path.stat().st_size == 0:
        raise ConfigError(f"{what}: {path} is empty (0 bytes), not a checkpoint")
    zipped = zipfile.is_zipfile(path)
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols of files that are not checkpoints
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as exc:
        raise ConfigError(f"{what}: {path} is not a checkpoint ({_unreadable(exc, zipped)})") from None
    if not isinstance(data, Mapping) or "state_dict" not in data:
        held = f"a {type(data).__name__}" if not isinstance(data, Mapping) else "a mapping without a state_dict"
        raise ConfigError(f"{what}: {path} is not a training checkpoint (it holds {held})")
    if CONFIG_KEY not in data:
        raise ConfigError(
            f"{what}: {path} was not written by this version of vad.train (no '{CONFIG_KEY}' entry): a checkpoint "
            "of another program or of an incompatible version of the suite"
        )
    return dict(data)


@dataclass(frozen=True)
class StateMismatch:
    """Keys the module has and the state lacks (``missing``), keys only the state has (``unexpected``), and the
    shared keys whose value is not a tensor of the module's shape (``reshaped``: name, what the state holds -- a
    shape or a type name --, the module's shape), each sorted by name."""

    missing: list[str]
    unexpected: list[str]
    reshaped: list[tuple[str, tuple[int, ...] | str, tuple[int, ...]]]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.reshaped)


def compare_state(expected: Mapping[str, Tensor], state: Mapping[str, object]) -> StateMismatch:
    """Compare ``state`` (e.g. a loaded file's state dict) with ``expected`` (a module's ``state_dict()``)."""
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    reshaped = []
    for name, tensor in sorted(expected.items()):
        if name not in state:
            continue
        value = state[name]
        found = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        if found != tuple(tensor.shape):
            reshaped.append((name, found, tuple(tensor.shape)))
    return StateMismatch(missing, unexpected, reshaped)


#: ``_target_`` prefixes that moved when src/vad was restructured (commit 9aa94c9 -> the app/ reporting/ layout): a
#: run config saved before names the old ones. Methods, the datamodule, flows and nets kept their paths.
MOVED_TARGETS = {
    "vad.callbacks.": "vad.app.callbacks.",
    "vad.tracking.": "vad.reporting.tracking.",
    "vad.sweep.": "vad.app.sweep.",
}


def current_targets(node: Any) -> Any:
    """``node`` (a run config as plain dicts and lists) with every moved ``_target_`` prefix renamed
    (:data:`MOVED_TARGETS`), so a config saved before the restructuring composes and instantiates today."""
    if isinstance(node, Mapping):
        return {k: current_targets(v) for k, v in node.items()}
    if isinstance(node, list):
        return [current_targets(v) for v in node]
    if isinstance(node, str):
        for old, new in MOVED_TARGETS.items():
            if node.startswith(old):
                return new + node[len(old) :]
    return node


def saved_config(path: str | Path, what: str = "ckpt_path") -> dict[str, Any]:
    """The {"config", "choices"} record a checkpoint of this suite carries, its moved ``_target_`` s renamed (a
    one-line ConfigError when ``path`` is not a checkpoint of this suite, see :func:`read_checkpoint`)."""
    record = read_checkpoint(path, what)[CONFIG_KEY]
    return {**record, "config": current_targets(record["config"])}


def _named(keys: list[str]) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:_EXAMPLES])
    return f"{shown}, ..." if len(keys) > _EXAMPLES else shown


def check_fits(model: nn.Module, checkpoint: Mapping[str, Any], path: str | Path, what: str = "ckpt_path") -> None:
    """Raise a one-line ConfigError when the checkpoint's weights do not load into ``model`` as it is configured:
    weights missing from the file, weights the model does not have, or weights of another shape."""
    mismatch = compare_state(model.state_dict(), checkpoint["state_dict"])
    if not mismatch:
        return
    parts = []
    if mismatch.missing:
        parts.append(f"{len(mismatch.missing)} weights of the model missing ({_named(mismatch.missing)})")
    if mismatch.unexpected:
        parts.append(f"{len(mismatch.unexpected)} weights the model does not have ({_named(mismatch.unexpected)})")
    if mismatch.reshaped:
        name, found, shape = mismatch.reshaped[0]
        parts.append(f"{len(mismatch.reshaped)} of another shape ('{name}': {found} in the file, {shape} in the model)")
    raise ConfigError(
        f"{what}: {path} does not fit {type(model).__name__} as configured here ({'; '.join(parts)}): it was written "
        "for another method or other model settings, or by an incompatible version of the suite"
    )
