"""The rough edges a new user meets at the entry points (issue 12): footage without a test split or labels, values of
the wrong type, files that are not checkpoints, what a failed run leaves behind, the run's log file, --help."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from hydra_runs import TINY_FFP, hydra_job, tiny_dataset
from raw_fixtures import make_frames, write_image, write_video

from vad.app.evaluate import evaluate
from vad.app.overrides import check_overrides
from vad.app.train import train
from vad.errors import ConfigError
from vad.evaluation.protocol import evaluate as score_videos
from vad.evaluation.records import VideoSignals
from vad.reporting.summary import NO_LABELS, format_summary

# The footage folder: two MJPG videos and one frame folder, no training/ or testing/ split, no labels.
FOOTAGE = {"cam1": 12, "cam2": 10, "stills": 9}
CLIP_LEN = 5  # copy_last's clip length: the first 4 frames of each video have no prediction


def write_footage(root: Path) -> Path:
    for seed, (name, n) in enumerate(FOOTAGE.items()):
        frames = make_frames(n, 32, 32, 3, seed)
        if name == "stills":
            for i, frame in enumerate(frames):
                write_image(root / name / f"{i:03d}.png", frame)
        else:
            write_video(root / f"{name}.avi", frames)
    return root


def cli(module: str, *args: str, home: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` in ``home`` (VAD_HOME: data, cache and logs there)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=home,
        env=dict(os.environ, VAD_HOME=str(home)),
        timeout=timeout,
    )


SMALL_DATA = ["dataset.image_size=[32,32]", "dataset.num_workers=0", "dataset.persistent_workers=false"]


# ------------------------------------------------------------------------- 1. vad.evaluate on a folder of footage


def test_evaluate_scores_every_video_of_a_footage_folder_and_says_there_are_no_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_footage(tmp_path / "footage")
    out = tmp_path / "eval"
    evaluate(
        hydra_job("eval", ["model=copy_last", "dataset=folder", f"dataset.root={root}", *SMALL_DATA], out, tmp_path)
    )
    scored = sum(n - (CLIP_LEN - 1) for n in FOOTAGE.values())
    dropped = len(FOOTAGE) * (CLIP_LEN - 1)
    summary = capsys.readouterr().out.splitlines()[-7:]
    assert summary == [
        "CopyLast on folder [last]",
        "-------------------------",
        f"labels      {NO_LABELS}",
        f"frames      {scored} scored in 3 videos, {dropped} dropped",
        "score       psnr -1 (per-video min-max)",
        f"videos      every video of {root} (3; no test split, so no labels)",
        "checkpoint  none (untrained model)",
    ]
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert Counter(r["video"] for r in rows) == {name: n - (CLIP_LEN - 1) for name, n in FOOTAGE.items()}
    assert all(r["label"] == "" and np.isfinite(float(r["psnr"])) and np.isfinite(float(r["score"])) for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["auc_micro"], metrics["label_source"], metrics["frames"]) == (None, None, scored)
    assert metrics["test_videos"] == f"every video of {root} (3; no test split, so no labels)"


def test_the_summary_of_unlabelled_scores_says_there_is_nothing_to_evaluate_against() -> None:
    videos = [VideoSignals("a", [0, 1, 2], None, {"err": [0.1, 0.5, 0.2]}), VideoSignals("b", [0], None, {"err": [1]})]
    result = score_videos(videos, {"err": 1})
    assert format_summary(result, "demo", checkpoint="x.ckpt (last)").splitlines() == [
        "demo",
        "----",
        f"labels      {NO_LABELS}",
        "frames      4 scored in 2 videos, 0 dropped",
        "score       err +1 (per-video min-max)",
        "checkpoint  x.ckpt (last)",
    ]
    assert "AUC" not in format_summary(result, "demo").replace(NO_LABELS, "")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """ONE tiny FFP trained and tested (in this process) on the tiny set with its test labels removed, shared by the
    tests of this module: ``home``, ``data`` (the dataset overrides), ``run``, ``ckpt``, the ``metrics`` train returned
    and what it ``printed``. Read-only: a test writes into its own ``tmp_path``."""
    home = tmp_path_factory.mktemp("trained")
    data = tiny_dataset(home / "tiny")
    for labels in (home / "tiny" / "testing" / "labels").iterdir():
        labels.unlink()
    run = home / "run"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        metrics = train(hydra_job("train", [*data, *TINY_FFP], run, home))
    return {"home": home, "data": data, "run": run, "ckpt": run / "checkpoints" / "last.ckpt", "metrics": metrics,
            "printed": printed.getvalue()}  # fmt: skip


# ------------------------------------------------------- 2 and 5. training on footage without a test split; train.log


def test_training_on_footage_without_a_test_split_says_nothing_was_tested_and_logs_to_train_log(
    tmp_path: Path,
) -> None:
    tiny_dataset(tmp_path / "tiny")
    footage = tmp_path / "tiny" / "training" / "frames"  # a folder of frame folders: all training footage
    run = tmp_path / "run"
    proc = cli(
        "vad.train",
        "dataset=folder",
        f"dataset.root={footage}",
        "dataset.channels=1",
        *SMALL_DATA,
        *TINY_FFP,
        f"hydra.run.dir={run}",
        home=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    assert proc.stdout.splitlines()[-4:] == [
        "FFP on folder",
        "-------------",
        f"tested      nothing: {footage} has no test videos (no testing/ split: every video there is training "
        f"footage); to score footage: python -m vad.evaluate ckpt_path={ckpt} dataset.root=<footage>",
        f"checkpoint  {ckpt} (last)",
    ]
    assert not (run / "metrics.json").exists()
    assert not (run / "error.txt").exists()
    # The run's log holds Lightning's lines (which bypassed Hydra's file handler) and the vad summary.
    log = (run / "train.log").read_text()
    assert "[lightning.fabric.utilities.seed][INFO] - Seed set to 0" in log
    assert "`Trainer.fit` stopped: `max_steps=3` reached." in log
    assert f"tested      nothing: {footage} has no test videos" in log


def test_training_on_a_test_split_without_labels_scores_it_and_says_there_is_no_auc(trained: dict) -> None:
    run = trained["run"]
    assert trained["metrics"]["auc_micro"] is None
    assert trained["printed"].splitlines()[-4:] == [
        f"labels      {NO_LABELS}",
        "frames      9 scored in 2 videos, 8 dropped",
        "score       psnr -1 (per-video min-max)",
        f"checkpoint  {run / 'checkpoints' / 'last.ckpt'} (last)",
    ]
    assert len((run / "scores.csv").read_text().splitlines()) == 1 + 9


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model.loss.flow=abc"], "model.loss.flow=abc: expected a number (default 2.0), got the string 'abc'"),
        (["trainer.max_steps=abc"], "trainer.max_steps=abc: expected an integer (default 3000), got the string 'abc'"),
        (["trainer.max_steps=1.5"], "trainer.max_steps=1.5: expected an integer (default 3000), got 1.5"),
        (["trainer.max_steps=true"], "trainer.max_steps=true: expected an integer (default 3000), got true"),
        (["test=maybe"], "test=maybe: expected true or false (default true), got the string 'maybe'"),
        (["-m", "trainer.max_steps=3,abc"], "trainer.max_steps=abc: expected an integer (default 3000)"),
        (
            ["dataset=folder", "dataset.root=/x", "dataset.val_videos=two"],
            "dataset.val_videos=two: expected a number (default 0), got the string 'two'",
        ),
    ],
)
def test_wrong_types_name_the_key_and_the_expected_type(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_overrides("train", args)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_values_of_the_right_type_pass_the_type_check() -> None:
    check_overrides("train", ["trainer.devices=auto", "trainer.precision=bf16-mixed", "trainer.max_steps=null"])
    check_overrides("train", ["experiment=ffp_ped2_cpu", "trainer.precision=auto"])
    check_overrides("train", ["dataset.val_videos=0.2", "model.loss.adversarial=0", "model.loss.flow=1"])
    check_overrides("train", ["-m", "model.loss.flow=interval(0,2)", "+dataset.generator.num_train=2"])
    check_overrides("train", ["experiment=ffp_ped2", "model.loss.adversarial=0.05", "trainer.val_check_interval=500"])
    check_overrides("eval", ["model=copy_last", "dataset.eval_batch_size=8"])


# ----------------------------------------------------------------------------------- 4. files that are no checkpoint


def bad_checkpoints(folder: Path, good: Path) -> dict[str, Path]:
    """name -> a file that must be refused; written next to each other in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / f"{name}.ckpt" for name in ("text", "empty", "tensor", "no_config", "renamed")}
    files["text"].write_text("not a checkpoint\n")
    files["empty"].write_bytes(b"")
    torch.save(torch.ones(3), files["tensor"])
    checkpoint = torch.load(good, map_location="cpu", weights_only=True)
    torch.save({k: v for k, v in checkpoint.items() if k != "vad_config"}, files["no_config"])
    renamed = {k.replace("generator.", "gen."): v for k, v in checkpoint["state_dict"].items()}
    torch.save({**checkpoint, "state_dict": renamed}, files["renamed"])
    return files


def refusals(files: dict[str, Path]) -> dict[str, str]:
    """What each bad file is refused with (the start of the one-line message)."""
    return {
        "text": f"ckpt_path: {files['text']} is not a checkpoint (torch.load cannot read it: not a complete file "
        "written by torch.save)",
        "empty": f"ckpt_path: {files['empty']} is empty (0 bytes), not a checkpoint",
        "tensor": f"ckpt_path: {files['tensor']} is not a training checkpoint (it holds a Tensor)",
        "no_config": f"ckpt_path: {files['no_config']} was not written by this version of vad.train (no 'vad_config' "
        "entry): a checkpoint of another program or of an incompatible version of the suite",
        "renamed": f"ckpt_path: {files['renamed']} does not fit FFP as configured here (16 weights of the model "
        "missing ('generator.decoder.0.0.bias', 'generator.decoder.0.0.weight', ...); 16 weights the model does "
        "not have ('gen.decoder.0.0.bias', 'gen.decoder.0.0.weight', ...)): it was written for another method or "
        "other model settings, or by an incompatible version of the suite",
    }


def test_files_that_are_not_checkpoints_of_this_suite_are_refused_in_one_line(trained: dict, tmp_path: Path) -> None:
    files = bad_checkpoints(tmp_path / "bad", trained["ckpt"])
    expected = refusals(files)
    home, data = trained["home"], trained["data"]
    for name, path in files.items():
        with pytest.raises(ConfigError) as err:
            train(hydra_job("train", [*data, *TINY_FFP, f"ckpt_path={path}"], tmp_path / f"train_{name}", home))
        assert str(err.value) == expected[name], name
        with pytest.raises(ConfigError) as err:
            evaluate(hydra_job("eval", [f"ckpt_path={path}"], tmp_path / f"eval_{name}", home))
        assert str(err.value) == expected[name], name


def test_a_checkpoint_of_other_model_settings_is_refused_naming_a_weight_of_another_shape(
    trained: dict, tmp_path: Path
) -> None:
    home, ckpt = trained["home"], trained["ckpt"]
    wider = [o if o != "model.generator.features=4" else "model.generator.features=8" for o in TINY_FFP]
    with pytest.raises(ConfigError, match=r"does not fit FFP as configured here \(\d+ of another shape "):
        train(hydra_job("train", [*trained["data"], *wider, f"ckpt_path={ckpt}"], tmp_path / "train", home))
    with pytest.raises(ConfigError) as err:
        evaluate(hydra_job("eval", [f"ckpt_path={ckpt}", "model.generator.features=8"], tmp_path / "eval", home))
    assert "'generator.decoder.0.0.bias': (4,) in the file, (8,) in the model" in str(err.value)
    weights_only = tmp_path / "weights_only.ckpt"
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    torch.save({k: v for k, v in checkpoint.items() if k != "optimizer_states"}, weights_only)
    with pytest.raises(ConfigError, match=r"holds weights but no training state to resume from"):
        train(hydra_job("train", [*trained["data"], *TINY_FFP, f"ckpt_path={weights_only}"], tmp_path / "w", home))


def test_a_trained_checkpoint_scores_a_footage_folder_but_not_best_on_test(trained: dict, tmp_path: Path) -> None:
    root = write_footage(tmp_path / "footage")
    home, run = trained["home"], trained["ckpt"].parents[1]
    # in-process, the checkpoint's group choice (dataset=folder) is given as the CLI adds it
    given = [f"ckpt_path={run}", "dataset=folder", f"dataset.root={root}"]
    with pytest.raises(ConfigError, match=r"^select=best_on_test picks a checkpoint by test AUC, but the test videos "):
        evaluate(hydra_job("eval", [*given, "select=best_on_test"], tmp_path / "best", home))
    metrics = evaluate(hydra_job("eval", given, tmp_path / "eval", home))
    assert (metrics["videos"], metrics["frames"]) == (3, sum(n - (CLIP_LEN - 1) for n in FOOTAGE.values()))


def test_cli_refuses_a_non_checkpoint_in_one_line_and_the_failed_run_records_why(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    message = (
        f"ckpt_path: {text} is not a checkpoint (torch.load cannot read it: not a complete file written by torch.save)"
    )
    run = tmp_path / "run"
    proc = cli("vad.train", f"ckpt_path={text}", f"hydra.run.dir={run}", home=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {message}"
    assert "weights_only" not in proc.stdout + proc.stderr
    # 5. the run folder Hydra made is not an orphan: it says why the run failed (error.txt, and its log)
    assert (run / "error.txt").read_text() == message + "\n"
    assert f"run failed: {message}" in (run / "train.log").read_text()
    assert not (run / "checkpoints").exists()

    proc = cli("vad.evaluate", f"ckpt_path={text}", f"hydra.run.dir={tmp_path / 'eval'}", home=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {message}"
    assert not (tmp_path / "eval").exists()  # refused before Hydra made the run folder


# ------------------------------------------------------------------------------------------------------- 6. --help


ENTRY_POINTS = ("vad.train", "vad.evaluate", "vad.score", "vad.calibrate", "vad.export", "vad.prepare")
#: what --help says first, before Hydra's own text (its section named second)
HELP = {
    "vad.train": ("python -m vad.train: train a video anomaly detector", "== Configuration groups =="),
    "vad.evaluate": ("python -m vad.evaluate: test a trained checkpoint", "== Configuration groups =="),
    "vad.prepare": ("python -m vad.prepare: convert the official download of a public dataset", "== Config =="),
}


class Refusal(NamedTuple):
    """A refused command line: its argument and the one line on stderr it is answered with, whole (``whole``) or its
    start (the rest lists the valid keys)."""

    arg: str
    message: str
    whole: bool = False


UNKNOWN_KEY = Refusal("paths.no_such_key=1", "error: unknown config key 'paths.no_such_key'")
REFUSED = {
    "vad.train": [
        Refusal("model.loss.flwo=1", "error: unknown config key 'model.loss.flwo'"),
        Refusal(
            "model.loss.flow=abc",
            "error: model.loss.flow=abc: expected a number (default 2.0), got the string 'abc'",
            whole=True,
        ),
    ],
}
HEAVY = ("torch", "lightning", "sklearn", "matplotlib")


def imported_modules(proc: subprocess.CompletedProcess) -> set[str]:
    """The modules a ``python -X importtime`` run imported (from its stderr)."""
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_says_what_the_command_does_before_torch_loads(module: str, tmp_path: Path) -> None:
    # Start-up time is measured by experiments/bench_startup.py; what makes it short is checked here: --help does
    # not import torch or Lightning (seconds on a 2-core machine). One real `python -m` per entry point.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", module, "--help"], capture_output=True, text=True,
                          cwd=tmp_path, env=dict(os.environ, VAD_HOME=str(tmp_path)), timeout=300)  # fmt: skip
    modules = imported_modules(proc)
    assert modules, proc.stderr[-500:]
    assert sorted(m for m in modules if m.split(".")[0] in HEAVY)[:5] == []
    assert proc.returncode == 0, proc.stderr[-2000:]
    if module in HELP:
        first_line, section = HELP[module]
        assert proc.stdout.startswith(first_line)
        assert proc.stdout.index(first_line) < proc.stdout.index(section)
    assert "is powered by Hydra" not in proc.stdout
    assert not (tmp_path / "logs").exists()


#: one fresh Python that runs each entry point's ``__main__`` in turn on one refused argument (as ``python -m`` does)
#: and reports its exit code, its output and the heavy modules loaded so far
REFUSALS_DRIVER = """
import contextlib, io, json, runpy, sys
results = []
calls, heavy_packages = json.loads(sys.argv[1])
for module, arg in calls:
    sys.argv = [module, arg]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in heavy_packages)
    results.append([code, out.getvalue(), err.getvalue(), heavy[:5]])
print(json.dumps(results))
"""


def test_refused_overrides_are_answered_in_one_line_before_torch_loads(tmp_path: Path) -> None:
    # neither an unknown key nor a value of the wrong type imports torch or Lightning; each exits 2 with one line,
    # and no run folder is made
    calls = [(module, refusal) for module in ENTRY_POINTS for refusal in REFUSED.get(module, [UNKNOWN_KEY])]
    proc = subprocess.run([sys.executable, "-c", REFUSALS_DRIVER, json.dumps([[(m, r.arg) for m, r in calls], HEAVY])],
                          capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ, VAD_HOME=str(tmp_path)),
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    for (module, refusal), (code, _, stderr, heavy) in zip(calls, results, strict=True):
        assert heavy == [], (module, refusal.arg, heavy)
        assert code == 2, (module, refusal.arg, stderr[-2000:])
        given = [line if refusal.whole else line[: len(refusal.message)] for line in stderr.splitlines()]
        assert given == [refusal.message], (module, refusal.arg, stderr)
    assert not (tmp_path / "logs").exists()


def test_constants_kept_apart_from_heavy_modules_agree() -> None:
    import vad.app.evaluate
    from vad.data.datamodule import VideoDataModule

    assert f"{VideoDataModule.__module__}.{VideoDataModule.__qualname__}" == vad.app.evaluate.VIDEO_DATAMODULE
