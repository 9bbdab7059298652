"""How a state dict differs from a module's: the one comparison behind the suite's "does not fit" errors (training
checkpoints in :func:`vad.checkpoint_io.check_fits`, FlowNet2-SD weights in :class:`vad.flow.FlowNet2SD`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor


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
