"""vad.score's alerts on a detector that works: trained on the synthetic scene, calibrated on two held-out normal
videos, the alerts at a 1% false-alarm rate fall inside the labelled anomalous ranges of the test videos.

A 700-iteration training (over 2 min on 2 cores under the suite's load): slow, run by ``make test-all`` and CI. The
fast suite checks the same mechanism (calibrated thresholds, causal smoothing, alerts and events of vad.score, the
recalibration by vad.calibrate) on the session's tiny run in tests/integration/test_score.py. This is the check
that calibrated alerts mean something, frame by frame and smoothed causally (sigma 2, recalibrated with
vad.calibrate). Measured
(2026-12-03, AMD VM): frame by frame 94 alerts inside the labels, 5 outside (precision 0.95), a false-alarm rate of
0.011 on the normal test frames at a configured 0.01, all 7 anomalous segments alerted; smoothed 183 inside, 13
outside (precision 0.93), false-alarm rate 0.029 — 8 of the 13 in the 6 frames after an event, where a causal
filter lags (elsewhere 5 of 412 normal frames, 0.012) — all 7 segments alerted.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra_runs import hydra_job

from vad.app.calibrate import calibrate
from vad.app.score import score
from vad.app.train import train

pytestmark = pytest.mark.slow

FPR = 0.01


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of 1 in a 0/1 array: (first, last) inclusive."""
    padded = np.concatenate(([0], labels.astype(np.int8), [0]))
    starts = np.flatnonzero(np.diff(padded) == 1)
    ends = np.flatnonzero(np.diff(padded) == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def test_calibrated_alerts_fall_inside_the_labelled_anomalies(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    run = tmp_path / "run"
    # The quickstart's FFP without its flow and adversarial terms (0.95 micro AUC in the quickstart's note), two of
    # the eight training videos held out: the calibration's normal frames, never trained on.
    overrides = ["experiment=quickstart", f"dataset.root={root}", "dataset.val_videos=2", "flow=none",
                 "model.loss.flow=0", "model.loss.adversarial=0", "callbacks.progress_bar.refresh_rate=0"]  # fmt: skip
    train(hydra_job("train", overrides, run, tmp_path))
    ckpt = run / "checkpoints" / "last.ckpt"
    # the same detector calibrated for streams smoothed causally over sigma 2 frames (vad.calibrate on a copy)
    smoothed = tmp_path / "smoothed.ckpt"
    shutil.copyfile(ckpt, smoothed)
    calibrate(hydra_job("calibrate", [f"ckpt_path={smoothed}", "overwrite=true", "smoothing=2"], tmp_path / "c",
                        tmp_path))  # fmt: skip
    for name, checkpoint in (("frame_by_frame", ckpt), ("smoothed_sigma2", smoothed)):
        out = tmp_path / f"scored_{name}"
        score(hydra_job("score", [f"ckpt_path={checkpoint}", f"input={root / 'testing' / 'frames'}",
                                  f"threshold.fpr={FPR}"], out, tmp_path))  # fmt: skip
        check_alerts(root, out, name)


def check_alerts(root: Path, out: Path, name: str) -> None:
    alerts_in, alerts_out, normal, hit, total = 0, 0, 0, 0, 0
    for video in sorted((root / "testing" / "frames").iterdir()):
        labels = np.load(root / "testing" / "labels" / f"{video.name}.npy")
        with (out / video.name / "scores.csv").open() as f:
            rows = list(csv.DictReader(f))
        frames = np.array([int(r["frame"]) for r in rows])
        alert = np.array([r["alert"] == "1" for r in rows])
        label = labels[frames].astype(bool)
        alerts_in += int((alert & label).sum())
        alerts_out += int((alert & ~label).sum())
        normal += int((~label).sum())
        for first, last in segments(labels):
            total += 1
            hit += bool(alert[(frames >= first) & (frames <= last)].any())
        # events.json: every event is a run of alerts
        for event in json.loads((out / video.name / "events.json").read_text())["events"]:
            inside = (frames >= event["start_frame"]) & (frames <= event["end_frame"])
            assert alert[inside].all()
    precision = alerts_in / max(alerts_in + alerts_out, 1)
    false_alarm_rate = alerts_out / normal
    print(f"{name}: alerts {alerts_in} in / {alerts_out} out, precision {precision:.3f}, false-alarm rate on normal "
          f"test frames {false_alarm_rate:.4f} (configured {FPR}), segments alerted {hit}/{total}")  # fmt: skip
    # The threshold holds 1% of the held-out normal frames above it; the test's normal frames are other videos, so
    # their rate may differ by sampling, but not by an order of magnitude.
    assert false_alarm_rate <= 5 * FPR, name
    assert precision >= 0.9, name
    assert hit >= 0.75 * total, name
