"""The precision a run's detector runs in (vad.precision): its trainer's float32 or bf16-mixed, by either of
Lightning's names; anything else (GPU float16) in float32; and the autocast it means."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from vad import precision


@pytest.mark.parametrize(
    ("trainer", "expected"),
    [
        ({"precision": "bf16-mixed"}, "bf16-mixed"),
        ({"precision": "bf16"}, "bf16-mixed"),
        ({"precision": "32-true"}, "32-true"),
        ({"precision": 32}, "32-true"),
        ({"precision": "16-mixed"}, "32-true"),
        ({}, "32-true"),
        (None, "32-true"),
    ],
)
def test_a_runs_precision_is_its_trainers_when_a_detector_can_run_in_it(trainer: dict | None, expected: str) -> None:
    assert precision.of_run({"trainer": trainer}) == expected
    assert precision.of_run(OmegaConf.create({"trainer": trainer})) == expected


def test_the_autocast_of_each_precision() -> None:
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with precision.autocast("bf16-mixed", "cpu"):
        assert layer(x).dtype == torch.bfloat16
    with precision.autocast("32-true", "cpu"):
        assert layer(x).dtype == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.autocast("16-mixed", "cpu")


# -- choosing the precision from the machine (trainer.precision=auto, and scoring a checkpoint elsewhere) -----------


@pytest.fixture
def cpu_units(monkeypatch: pytest.MonkeyPatch):
    """Make this CPU look as if it had the given flags (the detection reads /proc/cpuinfo once, through _cpu_flags)."""

    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(precision, "_cpu_flags", lambda: tuple(flags))

    return set_flags


def test_the_cpus_bf16_units_are_read_from_its_flags(cpu_units) -> None:
    cpu_units("fpu", "sse", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
    assert precision.cpu_bf16_units() == ["amx_bf16", "avx512_bf16"]
    assert precision.native_bf16("cpu")[0]
    cpu_units("fpu", "sse", "avx2", "avx512f")  # AVX-512 without its BF16 extension: bf16 autocast is emulated
    assert precision.cpu_bf16_units() == []
    assert not precision.native_bf16("cpu")[0]
    cpu_units()  # no /proc/cpuinfo (not Linux): nothing is assumed
    assert precision.cpu_bf16_units() == []


def test_the_flags_are_this_machines() -> None:
    from pathlib import Path

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    for unit in precision.CPU_BF16_FLAGS:
        assert (unit in precision.cpu_bf16_units()) == (f" {unit}" in text)


@pytest.mark.parametrize(
    ("flags", "expected", "why"),
    [
        ((), "32-true", "no bfloat16 units"),
        (("avx2",), "32-true", "no bfloat16 units"),
        (("avx512_bf16",), "bf16-mixed", "bfloat16 units (avx512_bf16)"),
        (("amx_bf16", "amx_tile"), "bf16-mixed", "bfloat16 units (amx_bf16)"),
    ],
)
def test_auto_on_a_cpu_is_bf16_only_where_the_cpu_has_bf16_units(cpu_units, flags, expected: str, why: str) -> None:
    cpu_units(*flags)
    for accelerator in ("cpu", "auto"):  # auto: no CUDA device here
        chosen, line = precision.resolve("auto", accelerator)
        assert chosen == expected
        assert line is not None
        assert line.startswith(f"trainer.precision=auto: {expected}")
        assert why in line


@pytest.mark.parametrize(("supported", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_a_cuda_device_is_bf16_where_the_device_supports_it(
    monkeypatch: pytest.MonkeyPatch, cpu_units, supported: bool, expected: str
) -> None:
    cpu_units("avx512_bf16")  # the host CPU does not decide for a GPU run
    monkeypatch.setattr(precision, "cuda_bf16", lambda: supported)
    assert precision.device_type("gpu") == precision.device_type("cuda") == "cuda"
    chosen, line = precision.resolve("auto", "gpu")
    assert chosen == expected
    assert "CUDA device" in line
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # accelerator=auto finds the device
    assert precision.resolve("auto", "auto")[0] == expected


@pytest.mark.parametrize("given", ["32-true", "bf16-mixed", "16-mixed", 32])
@pytest.mark.parametrize("flags", [(), ("amx_bf16",)])
def test_an_explicit_trainer_precision_always_wins(cpu_units, given, flags) -> None:
    cpu_units(*flags)
    assert precision.resolve(given, "cpu") == (given, None)


@pytest.mark.parametrize(
    ("trained_in", "flags", "requested", "expected", "says"),
    [
        ("bf16-mixed", ("avx512_bf16",), None, "bf16-mixed", None),  # as trained and tested: bit for bit
        ("bf16-mixed", (), None, "32-true", "can differ from the training machine's in the last bits"),
        ("32-true", (), None, "32-true", None),
        ("32-true", ("amx_bf16",), None, "32-true", None),  # a float32 run stays float32 everywhere
        ("bf16-mixed", (), "bf16-mixed", "bf16-mixed", None),  # an explicit precision wins
        ("32-true", ("amx_bf16",), "bf16", "bf16-mixed", None),
        ("bf16-mixed", ("amx_bf16",), "32-true", "32-true", None),
        ("32-true", ("amx_bf16",), "auto", "bf16-mixed", "precision=auto: bf16-mixed"),
        ("bf16-mixed", (), "auto", "32-true", "precision=auto: 32-true"),
    ],
)
def test_a_checkpoint_is_scored_in_its_training_precision_only_where_that_is_native(
    cpu_units, trained_in: str, flags, requested, expected: str, says: str | None
) -> None:
    cpu_units(*flags)
    chosen, line = precision.for_scoring(trained_in, "cpu", requested)
    assert chosen == expected
    assert (line is None) == (says is None)
    if says is not None:
        assert says in line
