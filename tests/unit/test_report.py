"""Run report files: exact CSV, JSON round trip, real PNGs, atomic writes and the printed tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from vad.evaluation.protocol import ProtocolResult, evaluate
from vad.evaluation.records import VideoSignals
from vad.reporting.files import read_scores_csv, write_metrics_json, write_report, write_scores_csv
from vad.reporting.machine import run_metadata
from vad.reporting.panels import SampleGrid
from vad.reporting.plots import plot_roc, plot_sample_grid, plot_score_curves
from vad.reporting.summary import format_comparison, format_summary

FULL_LABELS = {"01": np.array([1, 0, 0, 1, 1], np.uint8), "02": np.array([0, 0, 1, 1], np.uint8)}


def tiny_result() -> ProtocolResult:
    # Video 01 is scored from frame 1 (frame 0 has no prediction); its frame 2 has a NaN PSNR and is dropped.
    videos = [
        VideoSignals("01", [1, 2, 3, 4], None, {"psnr": [30.0, np.nan, 20.0, 25.0], "dist": [0.1, 0.2, 0.9, 0.5]}),
        VideoSignals("02", [1, 2, 3], None, {"psnr": [31.5, 22.0, 24.0], "dist": [0.0, 0.25, 1.0]}),
    ]
    return evaluate(videos, {"psnr": -1.0}, full_labels=FULL_LABELS, label_source="hand-made")


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_scores_csv_exact(tmp_path):
    path = write_scores_csv(tmp_path / "scores.csv", tiny_result())
    assert read_rows(path) == [
        ["video", "frame", "label", "score", "psnr", "dist"],
        ["01", "1", "0", "0.0", "30.0", "0.1"],
        ["01", "3", "1", "1.0", "20.0", "0.9"],
        ["01", "4", "1", "0.5", "25.0", "0.5"],
        ["02", "1", "0", "0.0", "31.5", "0.0"],
        ["02", "2", "1", "1.0", "22.0", "0.25"],
        ["02", "3", "1", "0.7894736842105263", "24.0", "1.0"],
    ]


def test_scores_csv_reads_back_into_the_same_metrics(tmp_path):
    result = tiny_result()
    videos = read_scores_csv(write_scores_csv(tmp_path / "scores.csv", result))
    assert [v.name for v in videos] == ["01", "02"]
    np.testing.assert_array_equal(videos[0].frames, [1, 3, 4])  # the dropped NaN frame is not in the file
    np.testing.assert_array_equal(videos[1].labels, [0, 1, 1])
    np.testing.assert_array_equal(videos[0].signals["dist"], [0.1, 0.9, 0.5])
    again = evaluate(videos, {"psnr": -1.0})
    assert (again.auc_micro, again.auc_macro) == (result.auc_micro, result.auc_macro)
    for before, after in zip(result.videos, again.videos, strict=True):
        np.testing.assert_array_equal(before.score, after.score)
    unlabelled = evaluate([VideoSignals("09", [0, 1], None, {"psnr": [1.0, 2.0]})], {"psnr": -1.0})
    assert read_scores_csv(write_scores_csv(tmp_path / "u.csv", unlabelled))[0].labels is None


def test_metrics_json_round_trip(tmp_path):
    result = tiny_result()
    meta = {"checkpoint": tmp_path / "last.ckpt", "checkpoint_selection": "last", "seed": np.int64(7)}
    path = write_metrics_json(tmp_path / "metrics.json", result, meta)
    doc = json.loads(path.read_text())
    assert doc == {
        **result.to_dict(),
        "checkpoint": str(tmp_path / "last.ckpt"),
        "checkpoint_selection": "last",
        "seed": 7,
    }
    assert doc["auc_micro"] == 1.0
    assert doc["per_video_auc"] == {"01": 1.0, "02": 1.0}
    assert (doc["frames"], doc["anomalous"], doc["dropped"], doc["dropped_missing"]) == (6, 4, 3, 2)
    assert (doc["weights"], doc["normalisation"], doc["label_source"]) == (
        {"psnr": -1.0},
        "per-video min-max",
        "hand-made",
    )


def test_metrics_json_writes_nan_as_null_and_rejects_clashing_meta(tmp_path):
    with pytest.warns(RuntimeWarning):
        result = evaluate([VideoSignals("a", [0, 1], [0, 0], {"psnr": [1.0, 2.0]})], {"psnr": -1})
    doc = json.loads(write_metrics_json(tmp_path / "m.json", result, {"note": float("nan")}).read_text())
    assert doc["auc_micro"] is None
    assert doc["note"] is None
    with pytest.raises(ValueError, match=r"\['frames'\]"):
        write_metrics_json(tmp_path / "m2.json", result, {"frames": 3})
    assert not (tmp_path / "m2.json").exists()


def test_run_metadata_reports_versions_and_commit():
    meta = run_metadata()
    assert meta["versions"]["vad"] == "0.1.0"
    assert meta["versions"]["torch"].startswith("2.")
    commit = meta["git_commit"]
    assert commit is None or (len(commit) == 40 and isinstance(meta["git_dirty"], bool))
    assert meta["machine"]["cpu_count"] >= 1
    assert meta["machine"]["torch_threads"] >= 1
    assert isinstance(meta["machine"]["cpu"], str)
    assert set(meta["machine"]["cpu_bf16"]) <= {"amx_bf16", "avx512_bf16"}  # what bf16 autocast runs on
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    assert ("amx_bf16" in meta["machine"]["cpu_bf16"]) == (" amx_bf16" in flags)
    json.dumps(meta)


def test_plots_are_real_pngs_with_grid_dimensions(tmp_path):
    result = tiny_result()
    one = evaluate(
        [VideoSignals("01", [1, 3, 4], None, {"psnr": [30.0, 20.0, 25.0]})], {"psnr": -1}, full_labels=FULL_LABELS
    )
    five = evaluate([VideoSignals(f"{i}", [0, 1], [0, 1], {"psnr": [2.0, 1.0]}) for i in range(5)], {"psnr": -1})
    h1, w1, _ = imread(plot_score_curves(tmp_path / "one.png", one, FULL_LABELS)).shape
    h2, w2, _ = imread(plot_score_curves(tmp_path / "two.png", result, FULL_LABELS)).shape
    h5, w5, _ = imread(plot_score_curves(tmp_path / "five.png", five, None)).shape
    assert (h2, w2) == (h1, 2 * w1)  # one subplot per video, side by side
    assert (h5, w5) == (2 * h1, 4 * w1)  # four columns, then a second row
    roc = imread(plot_roc(tmp_path / "roc.png", result))
    assert roc.shape[0] == roc.shape[1] > 100
    assert roc[..., :3].std() > 0  # something was drawn


def test_sample_grid_shape_and_input_checks(tmp_path):
    rng = np.random.default_rng(0)
    row = {
        "input": rng.uniform(-1, 1, (16, 24, 3)),
        "prediction": rng.uniform(-1, 1, (16, 24)),
        "target": rng.uniform(-1, 1, (16, 24, 1)),
        "error": rng.uniform(0, 2, (16, 24)),
    }
    h1, w1, _ = imread(plot_sample_grid(tmp_path / "one.png", [row])).shape
    h3, w3, _ = imread(plot_sample_grid(tmp_path / "three.png", [row] * 3, row_titles=["a", "b", "c"])).shape
    assert (h3, w3) == (3 * h1, w1)
    assert w1 == 4 * h1
    with pytest.raises(ValueError, match=r"error heat map must be >= 0"):
        plot_sample_grid(tmp_path / "bad.png", [{**row, "error": -row["error"]}])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        plot_sample_grid(tmp_path / "bad.png", [{"input": np.zeros((2, 3, 4))}])
    with pytest.raises(ValueError, match=r"row 1 has columns \['input'\], row 0 has \['input', 'prediction', "):
        plot_sample_grid(tmp_path / "bad.png", [row, {"input": row["input"]}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "three.png"]


def test_write_report_writes_everything_atomically(tmp_path):
    result = tiny_result()
    row = {
        "input": np.zeros((8, 8)),
        "prediction": np.ones((8, 8)),
        "target": np.zeros((8, 8)),
        "error": np.ones((8, 8)),
    }
    (tmp_path / "metrics.json").write_text("stale")
    grid = SampleGrid([row], ["01 · frame 4"], ("error",))
    paths = write_report(tmp_path, result, {"checkpoint_selection": "last"}, FULL_LABELS, samples=grid)
    names = {"scores.csv", "metrics.json", "score_curves.png", "roc.png", "samples.png"}
    assert {p.name for p in paths.values()} == names
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary files left
    assert json.loads((tmp_path / "metrics.json").read_text())["checkpoint_selection"] == "last"
    for name in ("score_curves.png", "roc.png", "samples.png"):
        assert imread(tmp_path / name).size > 0


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("previous")
    with pytest.raises(TypeError, match="cannot be written"):
        write_metrics_json(target, tiny_result(), {"model": object()})
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_summary_contains_the_numbers():
    # Concatenated [0, .65, .6, 1 | 0, 1] vs labels [0, 0, 1, 1 | 0, 1]: 8 of 9 pairs -> 0.8889; per video 0.75 and 1
    # -> macro 0.875; ROC corner (1/3, 2/3) -> EER 1/3; AP = 2/3 * 1 + 1/3 * 3/4 = 11/12; raw video b at 10, 11 -> 6/9.
    videos = [
        VideoSignals("a", [0, 1, 2, 3], [0, 0, 1, 1], {"err": [0.0, 0.65, 0.6, 1.0]}),
        VideoSignals("b", [4, 5], [0, 1], {"err": [10.0, 11.0]}),
    ]
    result = evaluate(videos, {"err": 1}, label_source="hand-made")
    assert format_summary(result, "demo").splitlines() == [
        "demo",
        "----",
        "micro AUC (frame level)    0.8889",
        "macro AUC (2 of 2 videos)  0.8750",
        "EER                        0.3333",
        "AP                         0.9167",
        "micro AUC, raw signals     0.6667",
        "frames                     6 scored, 3 anomalous, 0 dropped",
        "score                      err +1 (per-video min-max)",
        "labels                     hand-made",
    ]
    assert format_summary(result, "demo", checkpoint="run/last.ckpt (last)").splitlines()[-1] == (
        "checkpoint                 run/last.ckpt (last)"
    )
    assert "3 dropped" in format_summary(tiny_result(), "tiny")
    # the test scored as a stream (metrics.json's calibrated block), named as such, after the protocol's rows
    block = {"smoothing": 2.0, "fpr": 0.01, "auc_micro": 0.95, "alert_precision": 0.99, "alert_recall": 0.761,
             "alert_false_alarm_rate": 0.0234}  # fmt: skip
    lines = format_summary(result, "demo", calibrated=block).splitlines()
    assert lines[10:] == [
        "stream micro AUC (calibrated, causal sigma 2)  0.9500",
        "stream alerts (at 1% on calibration)           precision 0.9900, recall 0.7610, false alarms 2.3% of normal "
        "frames",
    ]
    assert "frame by frame" in format_summary(result, "demo", calibrated=block | {"smoothing": 0.0})
    assert "stream" not in format_summary(result, "demo", calibrated={"smoothing": 0.0, "fpr": 0.01})  # no labels


def test_comparison_table_is_aligned_markdown():
    rows = [{"run": "ffp", "auc_micro": 0.95, "frames": 1962}, {"run": "mnad-long", "auc_micro": float("nan")}]
    assert format_comparison(rows).splitlines() == [
        "| run       | auc_micro | frames |",
        "| --------- | --------: | -----: |",
        "| ffp       |    0.9500 |   1962 |",
        "| mnad-long |       n/a |        |",
    ]
