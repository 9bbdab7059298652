"""The precisions a detector trains and runs in, chosen from the machine where asked.

    precision.of_run(run_config)                    "bf16-mixed" for a run with trainer.precision=bf16-mixed
    precision.resolve("auto", "cpu")                ("32-true", "chose float32: ...") on a CPU without bf16 units
    precision.for_scoring("bf16-mixed", "cpu")      the precision to score a bf16-trained checkpoint in here
    with precision.autocast("bf16-mixed", "cpu"):   the forward passes in bfloat16, as a Lightning Trainer runs them

bfloat16 autocast is fast only where the hardware has bfloat16 arithmetic: a CPU with AVX-512 BF16 or AMX, a CUDA
device that supports bf16 (Ampere and later). Elsewhere torch emulates it, about 12x slower than float32 on a CPU
with AVX2 alone. ``trainer.precision=auto`` (the CPU presets' setting) therefore means bf16-mixed where it is native
and float32 otherwise; the run says which it chose and why, and records the resolved value in its config.

A detector is tested at the end of its training in its trainer's precision and calibrated in it too; ``vad.evaluate``,
``vad.score`` and ``vad.calibrate`` of its checkpoint use the same one where the machine runs it natively (so a
checkpoint's test is reproduced exactly) and float32 where a bf16-trained checkpoint would be emulated
(:func:`for_scoring`: its signals then differ from the training machine's in the last bits). An explicit precision
on the command line always wins. Imports no torch until it detects a CUDA device or autocasts.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

#: float32, or bfloat16 autocast (Lightning's names); a run in another precision (GPU float16) runs in float32
PRECISIONS = ("32-true", "bf16-mixed")
#: Lightning's short names of the same precisions
ALIASES = {"32": "32-true", "bf16": "bf16-mixed"}
#: the setting that chooses between :data:`PRECISIONS` by the machine (:func:`resolve`)
AUTO = "auto"
#: the CPU flags (/proc/cpuinfo) of native bfloat16 arithmetic: AMX tiles, or AVX-512 BF16 instructions
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def of_run(config: Mapping[str, Any]) -> str:
    """The precision a run's detector runs in: its ``trainer.precision`` (a dict or DictConfig of the run's config),
    when that is one of :data:`PRECISIONS`; float32 otherwise."""
    precision = str((config.get("trainer") or {}).get("precision", "32-true"))
    precision = ALIASES.get(precision, precision)
    return precision if precision in PRECISIONS else "32-true"


@functools.cache
def _cpu_flags() -> tuple[str, ...]:
    """The CPU's feature flags, read once from /proc/cpuinfo (empty where there is none: not Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return tuple(line.split(":", 1)[1].split())
    except OSError:
        pass
    return ()


def cpu_bf16_units() -> list[str]:
    """The CPU's bfloat16 units (``amx_bf16``, ``avx512_bf16``): with AMX, bf16 autocast runs convolutions several
    times faster than float32; with AVX-512 BF16 alone somewhat faster; without any, about 12x slower (emulated).
    Empty where /proc/cpuinfo does not say."""
    flags = _cpu_flags()
    return [unit for unit in CPU_BF16_FLAGS if unit in flags]


def cuda_bf16() -> bool:
    """Whether the current CUDA device computes in bfloat16 natively (Ampere or later)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))


def device_type(accelerator: str | None) -> str:
    """``cpu`` or ``cuda``: the device a Trainer of ``accelerator`` (``cpu``, ``gpu``, ``cuda``, ``auto``) runs on."""
    accelerator = str(accelerator or "auto").lower()
    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


def native_bf16(device: str) -> tuple[bool, str]:
    """Whether ``device`` (``cpu`` / ``cuda``) runs bfloat16 natively, and the words saying why."""
    if device == "cuda":
        if cuda_bf16():
            return True, "this CUDA device computes in bfloat16"
        return False, "this CUDA device has no bfloat16 arithmetic (before Ampere)"
    units = cpu_bf16_units()
    if units:
        return True, f"this CPU has bfloat16 units ({', '.join(units)})"
    return False, "this CPU has no bfloat16 units (no avx512_bf16 or amx_bf16: bfloat16 would be emulated, ~12x slower)"


def resolve(requested: Any, accelerator: str | None) -> tuple[str, str | None]:
    """The trainer precision ``requested`` means on this machine, and a line saying what ``auto`` chose and why
    (None for any other setting, which is kept as given: an explicit precision always wins)."""
    if str(requested) != AUTO:
        return requested, None
    device = device_type(accelerator)
    native, why = native_bf16(device)
    chosen = "bf16-mixed" if native else "32-true"
    name = "bf16-mixed (bfloat16 autocast)" if native else "32-true (float32)"
    return chosen, f"trainer.precision=auto: {name}, since {why}"


def for_scoring(trained_in: str, device: str, requested: Any = None) -> tuple[str, str | None]:
    """The precision to run a detector trained in ``trained_in`` on ``device``, and a line when it is not the
    training one: ``requested`` when given (an explicit ``precision=`` wins; ``auto`` chooses by the machine); else
    the training precision where the machine runs it natively (bit for bit the run's own test), float32 where a
    bfloat16-trained detector would be emulated."""
    if requested is not None and str(requested) != AUTO:
        return ALIASES.get(str(requested), str(requested)), None
    native, why = native_bf16(device)
    if requested is not None:  # auto: by the machine alone
        chosen = "bf16-mixed" if native else "32-true"
        return chosen, f"precision=auto: {chosen}, since {why}"
    if trained_in == "bf16-mixed" and not native:
        return "32-true", (
            f"scoring in float32, not in the bfloat16 this detector was trained and tested in: {why}; its signals "
            "can differ from the training machine's in the last bits (precision=bf16-mixed forces bfloat16)"
        )
    return trained_in, None


def autocast(precision: str, device_type: str) -> AbstractContextManager[Any]:
    """The context of ``precision``'s forward passes on ``device_type``: bfloat16 autocast, or none for float32."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
