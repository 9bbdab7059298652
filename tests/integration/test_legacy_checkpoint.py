"""A checkpoint written before the restructuring of src/vad (commit 9aa94c9, its module layout) still loads, tests and
scores: its run config names only classes that kept their import paths (methods, datamodule, flows), and its raw
signals are the ones that commit recorded.

``tests/data/legacy/``: a tiny FFP (width 4, 4 iterations, flow weight 0, one held-out video, calibrated after
training) on the tiny synthetic scene of ``hydra_runs.tiny_synthetic``, its ``scores.csv`` and the platform that wrote
them (``platform.json``: torch, CPU capability, threads). On that platform with as many threads the raw signals must
match to the last digit; elsewhere to 1e-4 relative (other kernels round differently).
"""

from __future__ import annotations

import csv
import json
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra_runs import hydra_job, tiny_synthetic

from vad.app.evaluate import _with_checkpoint_choices, evaluate
from vad.app.score import score

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy"
SIGNALS = ("psnr", "patch_max", "intensity_error", "gradient_error", "flow_error")


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def same_platform() -> bool:
    recorded = json.loads((LEGACY / "platform.json").read_text())
    return (
        recorded["torch"] == torch.__version__
        and recorded["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        and recorded["machine"] == platform.machine()
        and recorded["threads"] == torch.get_num_threads()
    )


def test_a_checkpoint_of_the_old_layout_is_evaluated_and_scored(tmp_path: Path) -> None:
    data = tiny_synthetic(tmp_path / "synthetic")
    root = next(o.split("=", 1)[1] for o in data if o.startswith("dataset.root="))
    ckpt = tmp_path / "legacy.ckpt"
    ckpt.write_bytes((LEGACY / "ffp_9aa94c9.ckpt").read_bytes())  # a copy: nothing may write into the fixture
    out = tmp_path / "eval"
    overrides = _with_checkpoint_choices([f"ckpt_path={ckpt}", f"dataset.root={root}", "pixel_metrics=false"])
    evaluate(hydra_job("eval", overrides, out, tmp_path))
    got, want = rows(out / "scores.csv"), rows(LEGACY / "ffp_9aa94c9_scores.csv")
    assert [(r["video"], r["frame"], r["label"]) for r in got] == [(r["video"], r["frame"], r["label"]) for r in want]
    for signal in SIGNALS:
        a = np.array([float(r[signal]) for r in got])
        b = np.array([float(r[signal]) for r in want])
        if same_platform():
            assert [r[signal] for r in got] == [r[signal] for r in want], signal
        else:
            np.testing.assert_allclose(a, b, rtol=1e-4, err_msg=signal)

    # its calibration (written by vad.train at that commit) still drives vad.score's alerts
    video = Path(root) / "testing" / "frames" / "01"
    score(hydra_job("score", [f"ckpt_path={ckpt}", f"input={video}"], tmp_path / "score", tmp_path))
    scored = rows(tmp_path / "score" / "scores.csv")
    in_test = [r for r in got if r["video"] == "01"]
    assert [int(r["frame"]) for r in scored] == [int(r["frame"]) for r in in_test]
    np.testing.assert_array_equal(
        [float(r["psnr"]) for r in scored], [float(r["psnr"]) for r in in_test]
    )  # vad.score == vad.evaluate, bit for bit
    assert {r["alert"] for r in scored} <= {"0", "1"}


@pytest.fixture(autouse=True)
def _no_writes_into_the_fixture() -> None:
    before = {p.name: p.stat().st_mtime_ns for p in LEGACY.iterdir()}
    yield
    assert {p.name: p.stat().st_mtime_ns for p in LEGACY.iterdir()} == before
