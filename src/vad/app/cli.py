"""Command-line plumbing shared by the Hydra entry points: run folders, logs and one-line errors.

    def main() -> None:
        run_hydra("train", train, resume_key="ckpt_path")

Before Hydra runs, the command line's overrides are checked (:func:`vad.app.overrides.check_overrides`: a mistyped
key or a value of the wrong type is refused in one line) and ``--help`` is answered without composing every group.

A run never writes into a folder that holds another run: a folder named on the command line
(``hydra.run.dir=...``, ``hydra.sweep.dir=...``) is checked before Hydra writes its ``.hydra/`` files there, and
every job checks its own folder again (:func:`check_fresh`).

In a multirun a failing job does not stop the sweep: its error goes to its log and ``error.txt``
(:func:`vad.app.runs.record_failure`), the job returns ``{"failed": <message>}``, the sweep summary lists it, and the
sweep exits with status 1 at the end (:class:`vad.app.sweep.SweepSummary`). A single run that fails keeps its folder and
records why in the same ``error.txt`` (and in its log), so no run folder is left without a result or a reason; a
failure that is about the folder itself (it holds another run) writes nothing there.

The run's log file (``<run>/<task_name>.log``, Hydra's job logging) receives the suite's and Lightning's log lines
(:func:`job_log`; Lightning's loggers do not propagate to the root logger Hydra configures) and the printed summary.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from vad import config_search_path
from vad.app.config_search import composing, config_groups
from vad.app.overrides import check_overrides, first_values, split_argv
from vad.errors import ConfigError, RunFolderError, VadError

log = logging.getLogger(__name__)

#: a logger whose lines go to the run's log file only (the console already shows them: summaries, failures)
FILE_LOG = "vad.run_log"
_file_log = logging.getLogger(FILE_LOG)
_file_log.propagate = False
_file_log.addHandler(logging.NullHandler())  # outside a job: dropped, not printed by logging's last resort
#: Lightning's loggers, which stop propagating to the root logger when it had no handler at their import
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")

#: what makes a folder a run's (besides Hydra's own files)
RUN_ARTIFACTS = ("checkpoints", "metrics.json", "scores.csv")


def check_fresh(run_dir: Path, resuming: bool) -> None:
    """Refuse to write into a folder that already holds a run (unless resuming an unfinished one)."""
    if (run_dir / "metrics.json").exists():
        raise RunFolderError(
            f"{run_dir} already holds a finished run (metrics.json); choose another hydra.run.dir or delete that folder"
        )
    if not resuming and any((run_dir / name).exists() for name in RUN_ARTIFACTS):
        raise RunFolderError(
            f"{run_dir} already holds a run; resume it with ckpt_path=last, or choose another hydra.run.dir"
        )


def check_run_folder(argv: Sequence[str], resume_key: str | None) -> None:
    """Check a run or sweep folder named on the command line before Hydra writes into it.

    ``hydra.run.dir=<folder>`` must not hold a run (one holding an unfinished run is accepted when ``resume_key``, e.g.
    ``ckpt_path``, is given); ``hydra.sweep.dir=<folder>`` of a multirun must not exist or be empty.
    """
    overrides, _ = split_argv(argv)
    given = {k: v.strip("'\"") for k, v in (o.lstrip("+").split("=", 1) for o in overrides if "=" in o)}
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if multirun and given.get("hydra.sweep.dir"):
        folder = Path(given["hydra.sweep.dir"])
        if folder.is_dir() and any(folder.iterdir()):
            raise ConfigError(f"hydra.sweep.dir={folder} is not empty; choose a new folder for this sweep")
    elif not multirun and given.get("hydra.run.dir"):
        check_fresh(Path(given["hydra.run.dir"]), resuming=bool(resume_key and given.get(resume_key)))


def _vad_error(exc: BaseException) -> VadError | None:
    """The VadError ``exc`` is or wraps (hydra.utils.instantiate wraps a constructor's error), or None."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, VadError):
        cause = cause.__cause__
    return cause


@contextmanager
def _as_single_run() -> Iterator[None]:
    """In a multirun job, present the job as the single run it is: ``hydra.run.dir`` names the job's folder and
    ``sys.argv`` holds the job's own overrides (restored afterwards).

    Lightning's DDP launcher starts the other ranks by re-running ``sys.argv`` in ``hydra.run.dir``; in a multirun
    those still hold the whole sweep and the single-run folder pattern, so each rank would start a sweep of its own.
    A DDP job's process group ends with the job (its other ranks have exited): it is destroyed and the environment
    variables it set (MASTER_PORT, ...) are removed, so that the next job of the process sets up its own. A job in a
    joblib worker process cannot start DDP ranks: DDP sweeps use the basic or the SLURM launcher.
    """
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        yield
        return
    argv, environ = sys.argv, dict(os.environ)
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    sys.argv = [argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]
    try:
        yield
    finally:
        sys.argv = argv
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(environ)


def run_directory() -> Path:
    """The running Hydra job's output folder (its run folder)."""
    return Path(HydraConfig.get().runtime.output_dir)


def show(text: str) -> None:
    """Print ``text`` (a run's summary) and copy it into the run's log file."""
    print(text)
    _file_log.info("%s", text)


@contextmanager
def job_log() -> Iterator[None]:
    """During a Hydra job, send Lightning's log lines and :data:`FILE_LOG`'s to the job's log file too.

    Hydra's job logging gives the root logger a console and a file handler (``<run>/<task_name>.log``) when the job
    starts; the suite's loggers (``vad.*``) propagate there. Lightning's ``lightning.pytorch`` / ``lightning.fabric``
    loggers do not: when they are imported before Hydra configures logging (as here: the entry points import
    Lightning first), the root logger has no handler yet, so they print through a handler of their own and stop
    propagating, and their lines ("Seed set to 0", "`Trainer.fit` stopped", "Restoring states from the checkpoint")
    never reached the file. The root's file handlers are added to them for the job and removed afterwards (each job
    of a multirun has its own file); their console output is unchanged.
    """
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    cut_off = [logger for logger in map(logging.getLogger, _LIGHTNING_LOGGERS) if not logger.propagate]
    attached = [(logger, h) for logger in [*cut_off, _file_log] for h in files if h not in logger.handlers]
    level = _file_log.level
    _file_log.setLevel(logging.INFO)
    for logger, handler in attached:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, handler in attached:
            logger.removeHandler(handler)
        _file_log.setLevel(level)


def _record_single_failure(exc: BaseException, ours: VadError | None) -> None:
    """A single run that failed keeps its folder with ``error.txt`` saying why (and its log the traceback of an
    unexpected error); nothing is written into a folder that is not this run's own (one holding another run, or
    ``vad.prepare``'s working directory)."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.output_subdir is None or isinstance(ours, RunFolderError):
        return
    message = str(ours) if ours is not None else f"{type(exc).__name__}: {exc}"
    from vad.app import runs  # numpy, matplotlib: only when a run fails

    runs.record_failure(Path(hydra_cfg.runtime.output_dir), message)
    _file_log.error("run failed: %s", message, exc_info=ours is None)


HELP_FLAGS = ("--help", "-h")


def fast_help(config_name: str, argv: Sequence[str]) -> str | None:
    """The text of ``--help`` (None without the flag), rendered from the entry point's ``hydra.help.template``
    like Hydra's, but with the config groups listed from the files of the config folders (the suite's and a user's):
    Hydra composes every group option to list them, which takes seconds, before torch would even be imported."""
    if not any(arg in HELP_FLAGS for arg in argv):
        return None
    overrides, custom = split_argv(argv)
    if custom:
        return None
    with composing(argv):
        cfg = hydra.compose(config_name, overrides=first_values(overrides), return_hydra_config=True)
    template = str(cfg.hydra.help.template)
    groups = "\n".join(f"{group}: {', '.join(options)}" for group, options in config_groups(argv).items())
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return template.replace("$APP_CONFIG_GROUPS", groups).replace("$CONFIG", OmegaConf.to_yaml(cfg))


def run_hydra(config_name: str, task: Callable[[DictConfig], Any], *, resume_key: str | None = None) -> None:
    """Run ``task`` as a Hydra app on ``conf/<config_name>.yaml``; VadErrors become ``error: ...`` and exit 2.

    ``resume_key``: the config key that resumes a run in its own folder (``ckpt_path`` for training). A failing
    single run records why in its folder's ``error.txt``; in a multirun a failing job is recorded and the sweep goes
    on (see the module docstring).
    """
    try:
        check_overrides(config_name, sys.argv[1:])
        text = fast_help(config_name, sys.argv[1:])
        if text is not None:
            print(text, end="" if text.endswith("\n") else "\n")
            raise SystemExit(0)
        check_run_folder(sys.argv[1:], resume_key)
    except VadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    def guarded(cfg: DictConfig) -> Any:
        from vad.app import runs  # after the command line is checked: it imports numpy and matplotlib

        with job_log():
            try:
                with _as_single_run():
                    result = task(cfg)
            except Exception as exc:
                ours = _vad_error(exc)
                if HydraConfig.get().mode == RunMode.MULTIRUN:
                    message = str(ours) if ours is not None else f"{type(exc).__name__}: {exc}"
                    log.error("job failed: %s", message, exc_info=ours is None)
                    runs.record_failure(Path(HydraConfig.get().runtime.output_dir), message)
                    return {runs.FAILED: message}
                _record_single_failure(exc, ours)
                if ours is None:
                    raise
                print(f"error: {ours}", file=sys.stderr)
                raise SystemExit(2) from None
            if HydraConfig.get().output_subdir is not None:  # a resumed run that succeeded: its old failure is past
                (Path(HydraConfig.get().runtime.output_dir) / runs.FAILURE_FILE).unlink(missing_ok=True)
            return result

    hydra.main(version_base="1.3", config_path=config_search_path(), config_name=config_name)(guarded)()
