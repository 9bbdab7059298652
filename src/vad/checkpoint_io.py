"""Checkpoint files written atomically: a killed or failing save never leaves a partial ``.ckpt``.

    trainer = L.Trainer(plugins=[AtomicCheckpointIO()])     (vad.build.build_trainer always adds it)

Lightning's own save stages the file in the system temp folder and moves it into place; when that folder is on
another file system (a tmpfs /tmp, a node-local disk) the move is a copy, and a run killed during the copy leaves a
truncated ``last.ckpt`` that cannot be resumed. Here the file is written next to its destination and renamed over
it (``os.replace``, atomic within one file system).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vad.report import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose ``save_checkpoint`` writes a temporary file in the target folder, then renames it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
