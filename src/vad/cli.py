"""Command-line plumbing shared by the Hydra entry points: override checking, run folders and one-line errors.

Hydra reports a mistyped key as "Key 'flwo' is not in struct" without saying what the valid keys are. Before Hydra
runs, :func:`check_overrides` composes the config once with the command line's overrides (first value of each
sweep) and turns a failure into one line that names the key and lists the valid choices.

A run never writes into a folder that holds another run: a folder named on the command line
(``hydra.run.dir=...``, ``hydra.sweep.dir=...``) is checked before Hydra writes its ``.hydra/`` files there, and
every job checks its own folder again (:func:`check_fresh`).

In a multirun a failing job does not stop the sweep: its error goes to its log and ``error.txt``
(:func:`vad.runs.record_failure`), the job returns ``{"failed": <message>}``, the sweep summary lists it, and the
sweep exits with status 1 at the end (:class:`vad.sweep.SweepSummary`).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write

from vad import config_dir, runs
from vad.errors import ConfigError, VadError

log = logging.getLogger(__name__)

#: what makes a folder a run's (besides Hydra's own files)
RUN_ARTIFACTS = ("checkpoints", "metrics.json", "scores.csv")

# Hydra flags that take a value; with a custom config path or name the check is skipped (advanced use).
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "--experimental-rerun"}
_CUSTOM_CONFIG_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}


def _split_argv(argv: Sequence[str]) -> tuple[list[str], bool]:
    """Return the override arguments of a Hydra command line and whether a custom config is requested."""
    overrides: list[str] = []
    custom = False
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        flag = arg.split("=", 1)[0]
        if flag in _CUSTOM_CONFIG_FLAGS:
            custom = True
            skip = "=" not in arg
        elif flag in _FLAGS_WITH_VALUE:
            skip = "=" not in arg and flag not in {"--info"}
        elif arg.startswith("-"):
            continue
        else:
            overrides.append(arg)
    return overrides, custom


def _first_values(overrides: Sequence[str]) -> list[str]:
    """The overrides with every sweep replaced by its first value, Hydra's own keys left out."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    out = []
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra") or key == "hparams_search":
            continue
        if override.is_sweep_override():
            value = override.value()
            if isinstance(value, IntervalSweep):  # a search space (Optuna): its lower end stands for it
                first = str(value.start)
            else:
                first = next(iter(override.sweep_string_iterator()), None)
            if first is None:
                continue
            out.append(f"{override.get_key_element()}={first}")
        else:
            out.append(override.input_line)
    return out


def _explain_missing_key(cfg_keys: Callable[[str], list[str] | None], key: str) -> str:
    parent, _, leaf = key.rpartition(".")
    valid = cfg_keys(parent) or []
    hint = difflib.get_close_matches(leaf, valid, n=1)
    where = f"under '{parent}'" if parent else "at the top level"
    guess = f" (did you mean '{parent + '.' if parent else ''}{hint[0]}'?)" if hint else ""
    return (
        f"unknown config key '{key}'{guess}; valid keys {where}: {', '.join(sorted(valid)) or '(none)'}; "
        f"prefix the override with + to add a new key"
    )


def check_overrides(config_name: str, argv: Sequence[str]) -> None:
    """Compose ``config_name`` with the overrides of ``argv``; raise ConfigError naming a bad key or choice."""
    overrides, custom = _split_argv(argv)
    if custom:
        return
    try:
        simple = _first_values(overrides)
    except HydraException as exc:
        raise ConfigError(f"cannot parse the command line overrides: {' '.join(str(exc).split())}") from None
    GlobalHydra.instance().clear()
    try:
        with hydra.initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            try:
                hydra.compose(config_name, overrides=simple)
            except HydraException as exc:
                groups_only = [o for o in simple if "." not in o.split("=", 1)[0]]
                raise ConfigError(_explain(exc, config_name, groups_only)) from None
    finally:
        GlobalHydra.instance().clear()


def _explain(exc: Exception, config_name: str, group_overrides: list[str]) -> str:
    """One line for a composition failure: the bad key or choice and the valid alternatives."""
    text = " ".join(str(exc).split())
    cause = " ".join(str(exc.__cause__).split()) if exc.__cause__ else ""
    choice = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if choice:
        group, name = choice.groups()
        options = GlobalHydra.instance().config_loader().get_group_options(group)
        hint = difflib.get_close_matches(name, options, n=1)
        guess = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"unknown choice '{name}' for {group}{guess}; valid choices: {', '.join(options)}"
    missing = re.search(r"Could not override '([^']+)'", text)
    if missing and "not in struct" in cause + text:
        try:
            base = hydra.compose(config_name, overrides=group_overrides)
        except HydraException:
            return text

        def keys(path: str) -> list[str] | None:
            node = OmegaConf.select(base, path) if path else base
            return [str(k) for k in node] if isinstance(node, DictConfig) else None

        return _explain_missing_key(keys, missing.group(1))
    return text


def check_fresh(run_dir: Path, resuming: bool) -> None:
    """Refuse to write into a folder that already holds a run (unless resuming an unfinished one)."""
    if (run_dir / "metrics.json").exists():
        raise ConfigError(
            f"{run_dir} already holds a finished run (metrics.json); choose another hydra.run.dir or delete that folder"
        )
    if not resuming and any((run_dir / name).exists() for name in RUN_ARTIFACTS):
        raise ConfigError(
            f"{run_dir} already holds a run; resume it with ckpt_path=last, or choose another hydra.run.dir"
        )


def check_run_folder(argv: Sequence[str], resume_key: str | None) -> None:
    """Check a run or sweep folder named on the command line before Hydra writes into it.

    ``hydra.run.dir=<folder>`` must not hold a run (one holding an unfinished run is accepted when ``resume_key``, e.g.
    ``ckpt_path``, is given); ``hydra.sweep.dir=<folder>`` of a multirun must not exist or be empty.
    """
    overrides, _ = _split_argv(argv)
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


def run_hydra(config_name: str, task: Callable[[DictConfig], Any], *, resume_key: str | None = None) -> None:
    """Run ``task`` as a Hydra app on ``conf/<config_name>.yaml``; VadErrors become ``error: ...`` and exit 2.

    ``resume_key``: the config key that resumes a run in its own folder (``ckpt_path`` for training). In a multirun
    a failing job is recorded and the sweep goes on (see the module docstring).
    """
    try:
        check_overrides(config_name, sys.argv[1:])
        check_run_folder(sys.argv[1:], resume_key)
    except VadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    def guarded(cfg: DictConfig) -> Any:
        try:
            with _as_single_run():
                return task(cfg)
        except Exception as exc:
            ours = _vad_error(exc)
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                message = str(ours) if ours is not None else f"{type(exc).__name__}: {exc}"
                log.error("job failed: %s", message, exc_info=ours is None)
                runs.record_failure(Path(HydraConfig.get().runtime.output_dir), message)
                return {runs.FAILED: message}
            if ours is None:
                raise
            print(f"error: {ours}", file=sys.stderr)
            raise SystemExit(2) from None

    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(guarded)()
