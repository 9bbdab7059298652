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
