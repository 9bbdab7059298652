"""The precisions a trained detector runs in, and the one it was trained in.

    precision.of_run(run_config)                 "bf16-mixed" for a run with trainer.precision=bf16-mixed
    with precision.autocast("bf16-mixed", "cpu"):  the forward passes in bfloat16, as a Lightning Trainer runs them

A detector is tested at the end of its training in its trainer's precision and calibrated in it too
(``vad.train.finalise_checkpoint``); ``vad.evaluate``, ``vad.score`` and ``vad.calibrate`` of its checkpoint use the
same one unless told otherwise, so a checkpoint's test is reproduced exactly. Imports no torch until it autocasts.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

#: float32, or bfloat16 autocast (Lightning's names); a run in another precision (GPU float16) runs in float32
PRECISIONS = ("32-true", "bf16-mixed")
#: Lightning's short names of the same precisions
ALIASES = {"32": "32-true", "bf16": "bf16-mixed"}


def of_run(config: Mapping[str, Any]) -> str:
    """The precision a run's detector runs in: its ``trainer.precision`` (a dict or DictConfig of the run's config),
    when that is one of :data:`PRECISIONS`; float32 otherwise."""
    precision = str((config.get("trainer") or {}).get("precision", "32-true"))
    precision = ALIASES.get(precision, precision)
    return precision if precision in PRECISIONS else "32-true"


def autocast(precision: str, device_type: str) -> AbstractContextManager[Any]:
    """The context of ``precision``'s forward passes on ``device_type``: bfloat16 autocast, or none for float32."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
