"""Checkpoint files written atomically: a killed or failing save never leaves a partial ``.ckpt``.

    trainer = L.Trainer(plugins=[AtomicCheckpointIO()])     (vad.app.build.build_trainer always adds it)

Lightning's own save stages the file in the system temp folder and moves it into place; when that folder is on
another file system (a tmpfs /tmp, a node-local disk) the move is a copy, and a run killed during the copy leaves a
truncated ``last.ckpt`` that cannot be resumed. Here the file is written next to its destination and renamed over
it (``os.replace``, atomic within one file system).

Reading a checkpoint a user names (``ckpt_path=``) goes through :func:`read_checkpoint` and :func:`check_fits`
(``vad.train`` resuming, ``vad.evaluate``): a file that is not a checkpoint of this suite, or one whose weights do not
fit the model, is refused in one line that says which, instead of PyTorch's unpickling errors (with their advice to
load untrusted files with ``weights_only=False``) or Lightning's multi-line ``load_state_dict`` report.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from vad.errors import ConfigError
from vad.nets.state import compare_state
from vad.reporting.report import atomic_path

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
    from vad.methods.base import CONFIG_KEY

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
