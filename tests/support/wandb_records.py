"""Read the records of an offline wandb run (``run-<id>.wandb``) for tests: what wandb itself stored.

The file is wandb's ``:W&B`` header (7 bytes) followed by a LevelDB-style log: 32 KiB blocks of chunks, each with a
7-byte header (CRC, little-endian length, type: 1 full, 2 first, 3 middle, 4 last) and a protobuf ``Record``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{path}: not a wandb run file")
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0:
            continue
        pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


@dataclass
class OfflineRun:
    """What a test checks of one offline run: its folder, name, group, logged keys and exit code."""

    folder: Path
    id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    keys: set[str] = field(default_factory=set)
    #: keys of the run summary's updates (``run.summary.update``)
    summary: set[str] = field(default_factory=set)
    exit_code: int | None = None


def offline_runs(wandb_dir: Path) -> list[OfflineRun]:
    """Every ``offline-run-*`` of a ``<run>/wandb`` folder, read from its ``.wandb`` file."""
    runs = []
    for folder in sorted(wandb_dir.glob("offline-run-*")):
        (file,) = folder.glob("run-*.wandb")
        run = OfflineRun(folder)
        for record in records(file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run.id, run.name = record.run.run_id, record.run.display_name
                run.group, run.job_type = record.run.run_group, record.run.job_type
            elif kind == "history":
                run.keys |= {item.key or "/".join(item.nested_key) for item in record.history.item}
            elif kind == "summary":
                run.summary |= {item.key or "/".join(item.nested_key) for item in record.summary.update}
            elif kind == "exit":
                run.exit_code = record.exit.exit_code
        runs.append(run)
    return runs
