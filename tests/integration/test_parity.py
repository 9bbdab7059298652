"""FFP and MNAD give the scores.csv they gave before the shared method code was refactored (same seed, same data).

The reference files (``tests/data/parity``) were written at commit 34415c5 on the platform of ``platform.json``. On
that platform (torch, CPU capability, architecture and the CPU itself: an AMD EPYC and an Intel Xeon both report
AVX512 but get other oneDNN kernels) the files must match byte for byte; elsewhere the raw signals must agree to 1e-4
relative (the per-video min-max of these nearly constant tiny-run signals amplifies rounding, so the fused score is
not compared there). A signal a method gained since (``ADDED_COLUMNS``) is a new last column: the reference columns
must still be unchanged, the new one only finite.
"""

from __future__ import annotations

import csv
import json
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from parity_runs import GOLDEN, PARITY_RUNS, parity_run

from vad.reporting import machine

#: run -> signal columns added after the reference files were written (FFP's patch_max and per-term errors, beside
#: the unchanged psnr)
ADDED_COLUMNS: dict[str, list[str]] = {"ffp": ["patch_max", "intensity_error", "gradient_error", "flow_error"]}


def same_platform() -> bool:
    recorded = json.loads((GOLDEN / "platform.json").read_text())
    return (
        recorded["torch"] == torch.__version__
        and recorded["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        and recorded["machine"] == platform.machine()
        and recorded["cpu"] == machine.cpu_description()
    )


def columns(path: Path) -> dict[str, list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [row[key] for row in rows] for key in rows[0]}


@pytest.mark.parametrize("name", list(PARITY_RUNS))
def test_scores_are_unchanged_by_the_refactor(name: str, tmp_path: Path) -> None:
    expected = GOLDEN / f"{name}_scores.csv"
    actual = parity_run(name, tmp_path)
    added = ADDED_COLUMNS.get(name, [])
    if same_platform() and not added:
        assert actual.read_text() == expected.read_text()
        return
    want, got = columns(expected), columns(actual)
    assert list(got) == list(want) + added
    for key in added:
        assert np.isfinite(np.array(got[key], float)).all(), key
    if same_platform():
        assert {key: got[key] for key in want} == want  # the reference columns' text, value for value
        return
    for key in ("video", "frame", "label"):
        assert got[key] == want[key]
    for key in list(want)[4:]:
        np.testing.assert_allclose(np.array(got[key], float), np.array(want[key], float), rtol=1e-4, err_msg=key)
