"""Checks that DDP replicas agree: a digest of every rank's weights, gathered after training.

    digests = replica_digests(model)      # one hex digest per rank; all equal unless the replicas diverged

DDP keeps replicas equal by averaging gradients; a step taken on one rank only (a manual-optimisation slip, an
unsynchronised buffer) makes them drift silently. ``vad.train`` compares the digests after fitting and records them
in metrics.json.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def state_digest(module: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of the module's state dict: every parameter and buffer, names and raw bytes."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def replica_digests(module: nn.Module) -> list[str]:
    """:func:`state_digest` of every rank, in rank order (a collective call under torch.distributed: every rank must
    make it); one entry without a process group."""
    digest = state_digest(module)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [digest]
    gathered: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, digest)
    return [str(d) for d in gathered]
