"""vad.score and vad.calibrate: a trained detector on files, folders and live sources; the same raw signals as
vad.evaluate, calibrated alerts, events, the overlay video, and the failures a user meets."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra_runs import TINY_FFP, hydra_job, tiny_synthetic
from omegaconf import OmegaConf

from vad import config_dir, precision
from vad.app.build import model_from_checkpoint
from vad.app.calibrate import calibrate
from vad.app.evaluate import _with_checkpoint_choices, evaluate
from vad.app.export import FILE_NAMES, export
from vad.app.score import score
from vad.app.train import train
from vad.errors import ConfigError, DataError
from vad.evaluation.calibration import DEFAULT_FPR, Calibration, events
from vad.evaluation.smoothing import CausalSmoother, causal_kernel, causal_smooth
from vad.inference import scorer as scorer_module
from vad.inference.exported import ExportedDetector
from vad.inference.scorer import StreamScorer
from vad.inference.sources import iterable_source, open_inputs
from vad.inference.spec import InputSpec

#: FFP's raw signals (its scores.csv columns)
SIGNALS = ("psnr", "patch_max", "intensity_error", "gradient_error")
#: the clips and frames of the tiny runs
TINY_SPEC = InputSpec(clip_len=5, size=(32, 32), channels=1)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def train_small(home: Path, *overrides: str) -> Path:
    """A small FFP trained on the tiny synthetic set (in ``home``) with one held-out video, tested, then calibrated:
    its last checkpoint (run folder ``home/run``)."""
    data = tiny_synthetic(home / "synthetic")
    train(hydra_job("train", [*data, *TINY_FFP, "model.loss.flow=0", "dataset.val_videos=1", *overrides],
                    home / "run", home))  # fmt: skip
    return home / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def trained(tiny_ffp_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The session's tiny FFP (trained with one held-out video, tested, then calibrated, its scores smoothed with
    sigma 2 frames: the protocol's centred Gaussian; the calibration's causal one for streams), read-only; ``home``
    is this module's folder for what the tests write."""
    ckpt = tiny_ffp_run["ckpt"]
    assert torch.load(ckpt, weights_only=False)["vad_calibration"]["frames"] == 32  # the held-out video, after training
    return {**tiny_ffp_run, "home": tmp_path_factory.mktemp("score")}


def assert_same_signals(scored: Path, tested: Path, signals: Iterable[str], video: str = "01") -> None:
    """vad.score's scores.csv holds, frame by frame and to the last bit, the raw signals of the test's scores.csv
    (vad.train's or vad.evaluate's) for ``video``."""
    rows = read_csv(scored)
    in_test = [r for r in read_csv(tested) if r["video"] == video]
    assert [int(r["frame"]) for r in rows] == [int(r["frame"]) for r in in_test]
    for signal in signals:
        assert [float(r[signal]) for r in rows] == [float(r[signal]) for r in in_test], signal


def score_job(trained: dict, name: str, *overrides: str) -> Path:
    out = trained["home"] / name
    score(hydra_job("score", [f"ckpt_path={trained['ckpt']}", *overrides], out, trained["home"]))
    return out


def test_score_gives_evaluates_raw_signals_exactly_and_alerts_in_the_anomalies(trained: dict) -> None:
    video = trained["root"] / "testing" / "frames" / "01"
    out = score_job(trained, "video01", f"input={video}", "overlay=true", "threshold.fpr=0.01")
    rows = read_csv(out / "scores.csv")
    model, _ = model_from_checkpoint(trained["ckpt"], hydra_job("score", [], trained["home"] / "m", trained["home"]))
    # every raw signal, to the last bit, and the detector in its test's memory format (channels-last for FFP): the
    # formats agree at this tiny size, but not at the presets' (gradient error 1.2e-7 apart at 128x128, width 32)
    assert set(model.signals) >= set(SIGNALS)
    assert_same_signals(out / "scores.csv", trained["run"] / "scores.csv", model.signals)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    # alerts: the frames whose calibrated score, smoothed over the past as the calibration says (the run's
    # model.smoothing), exceeds the threshold of a 1% false-alarm rate on the calibration frames (the held-out
    # normal video, smoothed the same way); that threshold lets at most 1% of those frames through
    calibration = model.calibration
    assert calibration.smoothing == 2.0
    threshold = calibration.threshold(0.01)
    assert calibration.false_alarm_rate(threshold) <= 0.01
    raw = {k: np.array([float(r[k]) for r in rows]) for k in model.signals}
    expected = causal_smooth(calibration.score(raw), 2.0)
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, rtol=1e-12)
    assert not np.allclose(expected, calibration.score(raw))  # the smoothing is not a no-op here
    assert [r["alert"] == "1" for r in rows] == list(expected > threshold)
    summary = json.loads((out / "score_summary.json").read_text())
    assert summary["threshold"] == threshold
    assert summary["smoothing"] == json.loads((out / "events.json").read_text())["smoothing"] == 2.0
    # events.json: the maximal runs of alerted frames of scores.csv
    record = json.loads((out / "events.json").read_text())
    frames = np.array([int(r["frame"]) for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    alerts = np.array([r["alert"] == "1" for r in rows])
    times = np.array([float(r["time"]) for r in rows])
    assert record["events"] == events(times, frames, scores, alerts)
    for event in record["events"]:
        inside_event = (frames >= event["start_frame"]) & (frames <= event["end_frame"])
        assert alerts[inside_event].all()
        assert event["peak_score"] == scores[inside_event].max()
    # the overlay: one frame per input frame, readable by OpenCV
    cap = cv2.VideoCapture(str(out / "overlay.avi"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == len(list(video.glob("*.png"))) + len(list(video.glob("*.jpg")))
    assert (out / "score.png").is_file()


def test_score_runs_the_detector_in_its_tests_memory_format_so_signals_match_at_any_width(tmp_path: Path) -> None:
    """At width 16 the convolutions' NCHW and channels-last kernels differ in the last bits (at the tiny width of
    the other tests they agree): vad.score loads the detector as the Trainer sets it up for vad.evaluate's test."""
    ckpt = train_small(tmp_path, "trainer.max_steps=3", "model.generator.features=16", "model.generator.depth=3")
    video = tmp_path / "synthetic" / "testing" / "frames" / "01"
    score(hydra_job("score", [f"ckpt_path={ckpt}", f"input={video}"], tmp_path / "s", tmp_path))
    assert_same_signals(tmp_path / "s" / "scores.csv", tmp_path / "run" / "scores.csv", SIGNALS)


def test_a_folder_of_videos_scores_each_and_a_video_file_matches_its_frames(trained: dict) -> None:
    folder = trained["home"] / "videos"
    folder.mkdir()
    sources = sorted((trained["root"] / "testing" / "frames").iterdir())
    for source in sources:
        frames = [cv2.imread(str(p)) for p in sorted(source.glob("*.*"))]
        writer = cv2.VideoWriter(str(folder / f"{source.name}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10,
                                 frames[0].shape[1::-1])  # fmt: skip
        for frame in frames:
            writer.write(frame)
        writer.release()
    out = score_job(trained, "folder", f"input={folder}")
    for source in sources:
        rows = read_csv(out / source.name / "scores.csv")
        assert len(rows) == len(list(source.glob("*.*"))) - 4  # clip length 5
        assert float(rows[1]["time"]) == pytest.approx(float(rows[0]["time"]) + 0.1)  # the file's 10 frames/s
    summary = json.loads((out / "score_summary.json").read_text())
    assert sorted(summary["inputs"]) == [s.name for s in sources]


def test_a_live_source_is_scored_as_it_comes_and_a_stream_that_stops_keeps_its_rows(
    trained: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, _ = model_from_checkpoint(trained["ckpt"], hydra_job("score", [], tmp_path / "x", tmp_path))
    frames = [cv2.imread(str(p)) for p in sorted((trained["root"] / "testing" / "frames" / "02").glob("*.*"))]
    scorer = StreamScorer(model, TINY_SPEC, batch_size=8, threshold=1.0)

    def camera() -> object:
        for i, frame in enumerate(frames):
            if i == 20:
                raise OSError("camera unplugged")
            yield frame

    with pytest.raises(OSError, match="camera unplugged"):
        scorer.run(iterable_source("cam", camera(), fps=30.0, live=True), tmp_path / "live")
    rows = read_csv(tmp_path / "live" / "scores.csv")
    assert [int(r["frame"]) for r in rows] == list(range(4, 20))  # every frame read before the failure, scored
    record = json.loads((tmp_path / "live" / "events.json").read_text())
    assert record["stopped"] == "failed: camera unplugged"
    # a file scored whole gives the same signals for those frames (live batches are smaller, values agree closely)
    whole = StreamScorer(model, TINY_SPEC, batch_size=32, threshold=1.0)
    whole.run(iterable_source("file", iter(frames), fps=30.0, live=False), tmp_path / "file")
    again = read_csv(tmp_path / "file" / "scores.csv")[: len(rows)]
    np.testing.assert_allclose([float(r["psnr"]) for r in rows], [float(r["psnr"]) for r in again], rtol=1e-5)


def test_footage_unlike_the_calibration_footage_gets_one_warning_line(
    trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new user's first try is often a detector of one scene on footage of another: nearly every frame alerts.
    vad.score then says why in one line (stderr, score_summary.json, events.json) — once, and as soon as it shows
    on a live input; normal footage of the scene gets no such line."""
    monkeypatch.setattr(scorer_module, "UNLIKE_MIN_FRAMES", 20)  # the tiny videos have 32 scored frames
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise"
    noise.mkdir()
    for i in range(36):
        cv2.imwrite(str(noise / f"{i:03d}.png"), rng.integers(0, 256, (32, 32), dtype=np.uint8))
    out = score_job(trained, "noise", f"input={noise}")
    warning = json.loads((out / "score_summary.json").read_text())["inputs"]["noise"]["warning"]
    assert warning.startswith("noise: 100% of 32 frames alert (median score ")
    assert "python -m vad.train dataset=folder" in warning
    assert json.loads((out / "events.json").read_text())["warning"] == warning
    assert capsys.readouterr().err.count(f"warning: {warning}") == 1

    normal = trained["root"] / "training" / "frames" / "01"
    out = score_job(trained, "normal", f"input={normal}")
    summary = json.loads((out / "score_summary.json").read_text())["inputs"]["01"]
    assert summary["scored"] == 32
    assert summary["warning"] is None
    assert "warning" not in capsys.readouterr().err

    monkeypatch.setattr(scorer_module, "REPORT_EVERY", 0.0)  # a live input checks at every console report
    model, _ = model_from_checkpoint(trained["ckpt"], hydra_job("score", [], tmp_path / "m", tmp_path))
    frames = [cv2.imread(str(p)) for p in sorted(noise.glob("*.png"))]
    scorer = StreamScorer(model, TINY_SPEC, threshold=model.calibration.threshold(DEFAULT_FPR))
    summary = scorer.run(iterable_source("cam", iter(frames), live=True), tmp_path / "live")
    assert summary.warning is not None
    assert summary.warning.startswith("cam: ")
    assert capsys.readouterr().err.count("warning: cam: ") == 1


def test_bad_inputs_get_one_clear_line(trained: dict, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(DataError, match=re.escape(f"{broken}: ")):
        open_inputs(str(broken))
    with pytest.raises(DataError, match="camera 97: OpenCV cannot open it"):
        open_inputs("97")
    with pytest.raises(DataError, match="no such file or folder"):
        open_inputs(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no video"):
        open_inputs(str(empty))
    uncalibrated = tmp_path / "uncalibrated.ckpt"
    checkpoint = torch.load(trained["ckpt"], weights_only=False)
    checkpoint.pop("vad_calibration")
    torch.save(checkpoint, uncalibrated)
    with pytest.raises(ConfigError, match=re.escape("holds no calibration; run `python -m vad.calibrate")):
        score(hydra_job("score", [f"ckpt_path={uncalibrated}", f"input={broken}"], tmp_path / "s", tmp_path))
    with pytest.raises(ConfigError, match="already holds a calibration"):
        calibrate(hydra_job("calibrate", [f"ckpt_path={trained['ckpt']}"], tmp_path / "c", tmp_path))


def test_bf16_scoring_runs_under_autocast_close_to_float32_and_bad_precisions_are_one_line(
    trained: dict, tmp_path: Path
) -> None:
    """precision=bf16-mixed: the forward passes run in bfloat16 (the signals move), close to float32's; an unknown
    precision, or bf16 asked of an exported model (which runs as exported), is one line naming the key."""
    video = trained["root"] / "testing" / "frames" / "01"
    fp32 = read_csv(score_job(trained, "fp32", f"input={video}") / "scores.csv")
    bf16 = read_csv(score_job(trained, "bf16", f"input={video}", "precision=bf16-mixed") / "scores.csv")
    assert [r["frame"] for r in bf16] == [r["frame"] for r in fp32]
    for signal in ("psnr", "patch_max"):
        got, want = (np.array([float(r[signal]) for r in rows]) for rows in (bf16, fp32))
        assert not np.array_equal(got, want), f"{signal}: bf16 scoring gave float32's values: no autocast ran"
        np.testing.assert_allclose(got, want, rtol=0.05, err_msg=signal)
    with pytest.raises(ConfigError, match=r"^precision=fp16 is not one of \['32-true', 'bf16-mixed', 'auto'\]"):
        score(hydra_job("score", [f"ckpt_path={trained['ckpt']}", f"input={video}", "precision=fp16"],
                        tmp_path / "p", tmp_path))  # fmt: skip
    export(hydra_job("export", [f"ckpt_path={trained['ckpt']}", "format=torchscript"], tmp_path / "e", tmp_path))
    exported = tmp_path / "e" / FILE_NAMES["torchscript"]
    with pytest.raises(ConfigError, match=re.escape(f"precision=bf16-mixed: {exported} is an exported model")):
        score(hydra_job("score", [f"ckpt_path={exported}", f"input={video}", "precision=bf16-mixed"],
                        tmp_path / "q", tmp_path))  # fmt: skip


def evaluate_in_process(ckpt: Path, out: Path, home: Path, *overrides: str) -> Path:
    """vad.evaluate of ``ckpt`` in this process (so a test can set what the CPU looks like), as its command line
    composes it (the checkpoint's group choices first): the run folder."""
    evaluate(hydra_job("eval", _with_checkpoint_choices([f"ckpt_path={ckpt}", *overrides]), out, home))
    return out


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bf16-mixed tiny FFP (explicit: bf16 on any CPU, whatever its units), tested and calibrated: its home."""
    home = tmp_path_factory.mktemp("bf16")
    train_small(home, "trainer.precision=bf16-mixed")
    return home


@pytest.mark.parametrize("native", [True, False], ids=["cpu-with-bf16-units", "cpu-without-bf16-units"])
def test_a_bf16_run_is_evaluated_scored_and_calibrated_in_bf16_where_native_else_in_float32(
    bf16_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """The detector runs in its run's trainer.precision where the machine computes it natively: vad.evaluate of a
    bf16-mixed run then reproduces its test exactly, vad.score scores it in bf16, vad.calibrate reproduces the
    calibration vad.train stored. On a CPU without bf16 units (emulated bf16, ~12x slower) all three run in float32
    instead, saying so; an explicit precision wins on both."""
    monkeypatch.setattr(precision, "_cpu_flags", lambda: ("avx2", "avx512_bf16") if native else ("avx2",))
    run = bf16_run / "run"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert json.loads((run / "metrics.json").read_text())["precision"] == "bf16-mixed"
    tested = (run / "scores.csv").read_text()
    default = evaluate_in_process(ckpt, tmp_path / "eval", tmp_path)
    fp32 = evaluate_in_process(ckpt, tmp_path / "eval32", tmp_path, "trainer.precision=32-true")
    bf16 = evaluate_in_process(ckpt, tmp_path / "eval16", tmp_path, "trainer.precision=bf16-mixed")
    assert (bf16 / "scores.csv").read_text() == tested != (fp32 / "scores.csv").read_text()
    metrics = json.loads((default / "metrics.json").read_text())
    assert metrics["precision"] == ("bf16-mixed" if native else "32-true")
    assert (default / "scores.csv").read_text() == (tested if native else (fp32 / "scores.csv").read_text())
    assert (metrics["precision_choice"] is None) == native
    if not native:
        assert "can differ from the training machine's in the last bits" in metrics["precision_choice"]

    video = bf16_run / "synthetic" / "testing" / "frames" / "01"
    scored = {}
    for name, extra in (("default", []), ("bf16", ["precision=bf16-mixed"]), ("fp32", ["precision=32-true"])):
        score(hydra_job("score", [f"ckpt_path={ckpt}", f"input={video}", *extra], tmp_path / name, tmp_path))
        scored[name] = (tmp_path / name / "scores.csv").read_text()
    assert scored["bf16"] != scored["fp32"]
    assert scored["default"] == scored["bf16" if native else "fp32"]
    summary = json.loads((tmp_path / "default" / "score_summary.json").read_text())
    assert summary["precision"] == ("bf16-mixed" if native else "32-true")
    assert_same_signals(tmp_path / "bf16" / "scores.csv", run / "scores.csv", SIGNALS)  # in bf16 too

    stored = torch.load(ckpt, weights_only=False)["vad_calibration"]
    calibrated = {}
    for name, extra in (("default", []), ("fp32", ["precision=32-true"])):
        copy = tmp_path / f"{name}.ckpt"
        copy.write_bytes(ckpt.read_bytes())
        calibrate(hydra_job("calibrate", [f"ckpt_path={copy}", "overwrite=true", *extra], tmp_path / f"c{name}",
                            tmp_path))  # fmt: skip
        calibrated[name] = json.dumps(torch.load(copy, weights_only=False)["vad_calibration"], sort_keys=True,
                                      default=str)  # fmt: skip
    assert calibrated["default"] == (json.dumps(stored, sort_keys=True, default=str) if native else calibrated["fp32"])


@pytest.mark.parametrize("native", [True, False], ids=["cpu-with-bf16-units", "cpu-without-bf16-units"])
def test_auto_precision_trains_in_bf16_only_where_native_and_a_resume_keeps_the_precision_it_started_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """trainer.precision=auto (the CPU presets'): bf16-mixed on a CPU with bf16 units, float32 on one without; the
    run says so, metrics.json and the checkpoint's run config record the resolved precision, and a resume on the
    other kind of CPU continues in the precision the run started in."""
    flags = {True: ("avx2", "amx_bf16"), False: ("avx2",)}
    monkeypatch.setattr(precision, "_cpu_flags", lambda: flags[native])
    expected = "bf16-mixed" if native else "32-true"
    ckpt = train_small(tmp_path, "trainer.max_steps=4", "trainer.precision=auto")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["precision"] == expected
    assert metrics["precision_choice"].startswith(f"trainer.precision=auto: {expected}")
    assert torch.load(ckpt, weights_only=False)["vad_config"]["config"]["trainer"]["precision"] == expected

    monkeypatch.setattr(precision, "_cpu_flags", lambda: flags[not native])  # resumed on the other kind of CPU
    data = tiny_synthetic(tmp_path / "synthetic")
    overrides = [*data, *TINY_FFP, "model.loss.flow=0", "dataset.val_videos=1", "trainer.max_steps=6",
                 "trainer.precision=auto", f"ckpt_path={ckpt}"]  # fmt: skip
    train(hydra_job("train", overrides, tmp_path / "resumed", tmp_path))
    resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert resumed["precision"] == expected
    started = f"trainer.precision=auto: {expected}, the precision the resumed run started in"
    assert resumed["precision_choice"] == started


# ONNX export takes over a minute: slow (make test-all); the TorchScript case checks the same scoring path fast
@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=pytest.mark.slow)])
def test_an_exported_model_scores_like_its_checkpoint(trained: dict, fmt: str) -> None:
    """vad.score ckpt_path=model.pt|model.onnx (vad.export's files, routed by suffix): the checkpoint's raw signals
    per frame, the same columns, calibration and threshold; the overlay has every frame, without a heat map."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    home = trained["home"]
    video = trained["root"] / "testing" / "frames" / "01"
    export(hydra_job("export", [f"ckpt_path={trained['ckpt']}", f"format={fmt}"], home / f"export_{fmt}", home))
    model_file = home / f"export_{fmt}" / FILE_NAMES[fmt]
    reference_out = score_job(trained, f"checkpoint_for_{fmt}", f"input={video}")
    out = home / f"scored_{fmt}"
    score(hydra_job("score", [f"ckpt_path={model_file}", f"input={video}", "overlay=true"], out, home))
    reference = read_csv(reference_out / "scores.csv")
    rows = read_csv(out / "scores.csv")
    assert list(rows[0]) == list(reference[0])  # the same columns, in the same order
    assert [r["frame"] for r in rows] == [r["frame"] for r in reference]
    assert [r["time"] for r in rows] == [r["time"] for r in reference]
    names = [c for c in reference[0] if c not in ("frame", "time", "score", "alert")]
    assert names[:2] == ["psnr", "patch_max"]
    for name in names:
        got = [float(r[name]) for r in rows]
        np.testing.assert_allclose(got, [float(r[name]) for r in reference], rtol=0, atol=1e-4, err_msg=name)
    # the calibration travelled in the file: the same threshold, and the scores of the same signals
    threshold = json.loads((reference_out / "score_summary.json").read_text())["threshold"]
    assert json.loads((out / "score_summary.json").read_text())["threshold"] == threshold
    calibration = ExportedDetector.load(model_file).calibration
    raw = {k: np.array([float(r[k]) for r in rows]) for k in names}
    assert calibration.smoothing == 2.0  # the stream smoothing travelled with it
    np.testing.assert_allclose([float(r["score"]) for r in rows], calibration.stream_scores(raw), rtol=1e-12)
    cap = cv2.VideoCapture(str(out / "overlay.avi"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == len(list(video.glob("*.*")))


def test_a_file_that_is_not_an_exported_model_is_one_line_naming_it(trained: dict, tmp_path: Path) -> None:
    video = trained["root"] / "testing" / "frames" / "01"

    def score_with(model_file: Path) -> None:
        score(hydra_job("score", [f"ckpt_path={model_file}", f"input={video}"], tmp_path / model_file.stem, tmp_path))

    plain = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {}}, plain)  # a plain torch.save file, not TorchScript
    with pytest.raises(ConfigError, match=re.escape(f"ckpt_path: {plain} is not a TorchScript model (")) as error:
        score_with(plain)
    assert "\n" not in str(error.value)
    unlabelled = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(unlabelled))
    with pytest.raises(ConfigError, match=re.escape(f"ckpt_path: {unlabelled} carries no vad.json metadata")):
        score_with(unlabelled)
    pytest.importorskip("onnxruntime")
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_text("not an ONNX model\n")
    with pytest.raises(ConfigError, match=re.escape(f"ckpt_path: {not_onnx} is not an ONNX model (")) as error:
        score_with(not_onnx)
    assert "\n" not in str(error.value)


def test_the_default_alert_rate_is_one_named_value() -> None:
    """vad.score's threshold.fpr default is the rate vad.evaluate reports and vad.calibrate prints."""
    assert OmegaConf.load(config_dir() / "score.yaml").threshold.fpr == DEFAULT_FPR == 0.01


def test_calibration_scores_thresholds_and_round_trip() -> None:
    rng = np.random.default_rng(0)
    psnr = rng.normal(30.0, 2.0, 5000)
    distance = rng.normal(0.5, 0.1, 5000)
    calibration = Calibration.fit({"psnr": psnr, "feature_distance": distance}, {"psnr": -1.0}, source="normal")
    assert calibration.stats["psnr"].median == pytest.approx(30.0, abs=0.1)
    assert calibration.stats["psnr"].scale == pytest.approx(2.0, rel=0.05)  # 1.4826 MAD = the std
    scores = calibration.score({"psnr": np.array([30.0, 26.0, 34.0])})
    assert scores[0] == pytest.approx(0.0, abs=0.05)
    assert scores[1] == pytest.approx(2.0, rel=0.05)  # a low PSNR is anomalous: +2 robust stds
    assert scores[2] == pytest.approx(-2.0, rel=0.05)
    threshold = calibration.threshold(0.01)
    assert calibration.false_alarm_rate(threshold) <= 0.01
    assert calibration.false_alarm_rate(threshold) > 0.005
    fresh = rng.normal(30.0, 2.0, 20000)
    assert np.mean(calibration.score({"psnr": fresh}) > threshold) == pytest.approx(0.01, abs=0.004)
    again = Calibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    np.testing.assert_array_equal(again.score({"psnr": psnr}), calibration.score({"psnr": psnr}))
    with pytest.raises(ConfigError, match=re.escape("threshold.fpr must lie in (0, 1)")):
        calibration.threshold(0.0)


def test_calibrating_on_normal_footage_scores_it_as_vad_score_does(trained: dict, tmp_path: Path) -> None:
    """vad.calibrate input=<normal footage>: the calibration frames are that footage, scored as vad.score scores it
    (raw signals to the last bit), smoothed per input; the footage then raises no alert at a 1% rate; no training
    data is read."""
    copy = tmp_path / "copy.ckpt"
    copy.write_bytes(trained["ckpt"].read_bytes())
    normal = trained["root"] / "training" / "frames"  # two normal videos: two inputs
    calibrate(hydra_job("calibrate", [f"ckpt_path={copy}", "overwrite=true", f"input={normal}"], tmp_path / "c",
                        tmp_path))  # fmt: skip
    got = Calibration.from_dict(torch.load(copy, weights_only=False)["vad_calibration"])
    assert got.source == f"normal footage {normal} (01, 02)"
    assert got.frames == 64
    assert got.smoothing == 2.0  # the run's model.smoothing
    # the same frames through vad.score (raw), fitted directly
    model, _ = model_from_checkpoint(trained["ckpt"], hydra_job("score", [], tmp_path / "m", tmp_path))
    signals: dict[str, list[float]] = {name: [] for name in model.signals}
    videos: list[int] = []
    for number, name in enumerate(("01", "02")):
        out = score_job(trained, f"raw_{name}", f"input={normal / name}", "raw=true", "threshold.value=0")
        assert (tmp_path / "c" / "footage" / name / "scores.csv").is_file()  # kept in the calibration's run folder
        for row in read_csv(out / "scores.csv"):
            for signal in model.signals:
                signals[signal].append(float(row[signal]))
            videos.append(number)
    arrays = {k: np.asarray(v) for k, v in signals.items()}
    want = Calibration.fit(arrays, model.score_weights, source="", smoothing=2.0, videos=np.asarray(videos))
    assert got.stats == want.stats
    np.testing.assert_array_equal(got.scores, want.scores)
    score(hydra_job("score", [f"ckpt_path={copy}", f"input={normal}"], tmp_path / "s", tmp_path))
    inputs = json.loads((tmp_path / "s" / "score_summary.json").read_text())["inputs"]
    assert [inputs[name]["alerts"] for name in ("01", "02")] == [0, 0]  # its own frames: none above their 99%
    with pytest.raises(DataError, match="no such file or folder"):
        calibrate(hydra_job("calibrate", [f"ckpt_path={copy}", "overwrite=true", f"input={tmp_path / 'none'}"],
                            tmp_path / "c2", tmp_path))  # fmt: skip
    exported = tmp_path / "model.pt"
    exported.write_bytes(b"an exported model")
    with pytest.raises(
        ConfigError, match=re.escape(f"ckpt_path: {exported} is an exported model; calibrate its .ckpt")
    ):
        calibrate(hydra_job("calibrate", [f"ckpt_path={exported}", f"input={normal}"], tmp_path / "c3", tmp_path))


def test_causal_smoothing_uses_only_the_past_and_a_stream_gets_what_a_file_gets() -> None:
    kernel = causal_kernel(2.0)
    assert kernel.size == 7  # the current frame and ceil(3 sigma) back
    assert kernel.sum() == pytest.approx(1.0)
    assert (np.diff(kernel) < 0).all()  # the current frame weighs most
    assert causal_kernel(0.0).tolist() == [1.0]
    rng = np.random.default_rng(1)
    x = rng.normal(size=60)
    smoothed = causal_smooth(x, 2.0)
    for i in (0, 5, 30):  # a value depends on the past only: changing the future changes nothing up to it
        changed = x.copy()
        changed[i + 1 :] += rng.normal(size=len(x) - i - 1) * 10
        np.testing.assert_array_equal(causal_smooth(changed, 2.0)[: i + 1], smoothed[: i + 1])
    impulse = np.zeros(20)
    impulse[5] = 1.0
    np.testing.assert_allclose(causal_smooth(impulse, 2.0)[5:12], kernel)  # its response is the kernel, after it
    assert not causal_smooth(impulse, 2.0)[:5].any()
    np.testing.assert_allclose(causal_smooth(np.full(10, 3.5), 2.0), 3.5)  # the first value repeated before the start
    np.testing.assert_array_equal(causal_smooth(x, 0.0), x)
    x[10] = np.nan  # a frame that could not be scored: passed through, skipped by its neighbours
    smoother = CausalSmoother(2.0)
    streamed = np.array([smoother.push(v) for v in x])
    np.testing.assert_allclose(streamed, causal_smooth(x, 2.0), rtol=1e-12)
    assert np.isnan(streamed[10])
    assert np.isfinite(streamed[11:]).all()
    with pytest.raises(ConfigError, match=re.escape("smoothing=-1 must be a finite number of frames >= 0")):
        causal_kernel(-1)


def test_a_smoothed_calibration_smooths_its_frames_video_by_video_and_keeps_its_false_alarm_rate() -> None:
    rng = np.random.default_rng(2)
    quiet, busy = rng.normal(30.0, 1.0, 400), rng.normal(26.0, 3.0, 400)  # two normal videos, PSNR
    psnr = np.concatenate([quiet, busy])
    videos = np.repeat([3, 12], 400)
    plain = Calibration.fit({"psnr": psnr}, {"psnr": -1.0}, source="normal")
    smoothed = Calibration.fit({"psnr": psnr}, {"psnr": -1.0}, source="normal", smoothing=2.0, videos=videos)
    assert smoothed.stats == plain.stats  # the signals' statistics do not depend on the smoothing
    z = plain.score({"psnr": psnr})
    per_video = np.concatenate([causal_smooth(z[:400], 2.0), causal_smooth(z[400:], 2.0)])
    np.testing.assert_allclose(smoothed.scores, np.sort(per_video), rtol=1e-12)
    across = Calibration.fit({"psnr": psnr}, {"psnr": -1.0}, source="normal", smoothing=2.0)  # one video
    assert not np.allclose(across.scores, smoothed.scores)  # a boundary crossed mixes the two videos' frames
    # smoothing averages the noise out: its threshold is lower, and holds its rate on fresh smoothed normal scores
    assert smoothed.threshold(0.01) < plain.threshold(0.01)
    fresh = rng.normal(30.0, 1.0, 20000)
    rate = np.mean(smoothed.stream_scores({"psnr": fresh}) > smoothed.threshold(0.05))
    assert rate < 0.05  # the quiet video alone is below the two videos' mix
    again = Calibration.from_dict(json.loads(json.dumps(smoothed.to_dict())))
    assert again.smoothing == 2.0
    np.testing.assert_array_equal(again.scores, smoothed.scores)
    older = smoothed.to_dict()
    older.pop("smoothing")  # a calibration written before stream smoothing existed: frame by frame
    assert Calibration.from_dict(older).smoothing == 0.0


def test_the_stream_numbers_smooth_as_the_calibration_says_and_another_sigma_needs_a_recalibration(
    trained: dict, tmp_path: Path
) -> None:
    """metrics.json's calibrated block scores each test video as vad.score would; vad.calibrate reproduces the run's
    calibration (the run's model.smoothing) or sets another sigma; vad.score refuses a sigma its calibration's
    thresholds do not hold for, in one line, and applies any with raw=true."""
    block = json.loads((trained["run"] / "metrics.json").read_text())["calibrated"]
    assert block["smoothing"] == 2.0
    model, _ = model_from_checkpoint(trained["ckpt"], hydra_job("score", [], tmp_path / "m", tmp_path))
    tested = read_csv(trained["run"] / "scores.csv")
    scores, labels = [], []
    for video in sorted({r["video"] for r in tested}):
        rows = [r for r in tested if r["video"] == video]
        raw = {k: np.array([float(r[k]) for r in rows]) for k in model.score_weights}
        scores.append(model.calibration.stream_scores(raw))
        labels.append([int(r["label"]) for r in rows])
    from sklearn.metrics import roc_auc_score

    assert block["auc_micro"] == pytest.approx(roc_auc_score(np.concatenate(labels), np.concatenate(scores)), 1e-9)

    stored = torch.load(trained["ckpt"], weights_only=False)["vad_calibration"]
    copy = tmp_path / "copy.ckpt"
    copy.write_bytes(trained["ckpt"].read_bytes())
    calibrate(hydra_job("calibrate", [f"ckpt_path={copy}", "overwrite=true"], tmp_path / "c", tmp_path))
    assert json.dumps(torch.load(copy, weights_only=False)["vad_calibration"], sort_keys=True) == json.dumps(
        stored, sort_keys=True
    )
    calibrate(hydra_job("calibrate", [f"ckpt_path={copy}", "overwrite=true", "smoothing=0"], tmp_path / "c0", tmp_path))
    unsmoothed = torch.load(copy, weights_only=False)["vad_calibration"]
    assert unsmoothed["smoothing"] == 0.0
    assert unsmoothed["stats"] == stored["stats"]
    assert unsmoothed["scores"] != stored["scores"]
    video = trained["root"] / "testing" / "frames" / "01"
    score(hydra_job("score", [f"ckpt_path={copy}", f"input={video}"], tmp_path / "s0", tmp_path))
    rows = read_csv(tmp_path / "s0" / "scores.csv")
    raw = {k: np.array([float(r[k]) for r in rows]) for k in SIGNALS}
    np.testing.assert_allclose([float(r["score"]) for r in rows], model.calibration.score(raw), rtol=1e-12)

    with pytest.raises(ConfigError, match=re.escape("smoothing=1: ")) as error:
        score_job(trained, "s1", f"input={video}", "smoothing=1")
    assert "python -m vad.calibrate" in str(error.value)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=re.escape("smoothing=-1 must be a finite number of frames >= 0")):
        score_job(trained, "s_bad", f"input={video}", "smoothing=-1")
    with pytest.raises(ConfigError, match=re.escape("smoothing='abc' must be a finite number of frames >= 0")):
        calibrate(hydra_job("calibrate", [f"ckpt_path={copy}", "overwrite=true", "smoothing=abc"], tmp_path / "cb",
                            tmp_path))  # fmt: skip
    out = score_job(trained, "raw1", f"input={video}", "raw=true", "smoothing=1", "threshold.value=0")
    rows = read_csv(out / "scores.csv")
    fused = sum(w * np.array([float(r[k]) for r in rows]) for k, w in model.score_weights.items())
    np.testing.assert_allclose([float(r["score"]) for r in rows], causal_smooth(fused, 1.0), rtol=1e-12)


def test_events_are_maximal_alert_runs_with_their_peaks() -> None:
    frames = np.arange(10, 20)
    times = frames / 10.0
    scores = np.array([0, 5, 6, 0, 0, 7, 0, 8, 9, 1], dtype=float)
    alerts = scores > 4
    assert [(e["start_frame"], e["end_frame"], e["peak_frame"]) for e in events(times, frames, scores, alerts)] == [
        (11, 12, 12),
        (15, 15, 15),
        (17, 18, 18),
    ]
    merged = events(times, frames, scores, alerts, gap=1)
    assert [(e["start_frame"], e["end_frame"], e["peak_score"]) for e in merged] == [(11, 12, 6.0), (15, 18, 9.0)]
    assert merged[1]["start_time"] == pytest.approx(1.5)
