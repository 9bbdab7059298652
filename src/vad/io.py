"""Atomic file writes: a reader or a crash never sees a half-written file.

    with atomic_path(run_dir / "metrics.json") as tmp:
        tmp.write_text(text)

The content goes to a temporary name in the destination's folder and is moved into place with ``os.replace`` (atomic
within one file system); an existing file is replaced (and the replacement logged) only that way. Used by the run
files (``vad.reporting``), the checkpoints (``vad.checkpoint_io``) and the entry points' own files (``vad.app``).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; on success move it onto ``path``, on failure delete it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        if path.exists():
            log.info("replacing %s", path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
