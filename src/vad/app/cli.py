"""Command-line plumbing shared by the Hydra entry points: override checking, run folders, logs and one-line errors.

Hydra reports a mistyped key as "Key 'flwo' is not in struct" without saying what the valid keys are, and passes a
value of the wrong type (``trainer.max_steps=abc``) on to the code, which fails far away from the command line.
Before Hydra runs, :func:`check_overrides` composes the config once with the command line's overrides (first value
of each sweep) and turns a failure into one line that names the key and lists the valid choices; a value whose type
does not fit its key (the annotation of the parameter it is passed to, else the type of its default) is refused in
one line naming the key and the expected type.

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

import difflib
import inspect
import logging
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from vad import config_dir
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
    # a mistyped level in the middle (model.lose.flow): name the deepest level that exists and its keys
    while parent and cfg_keys(parent) is None:
        parent, _, leaf = parent.rpartition(".")
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
                composed = hydra.compose(config_name, overrides=simple)
            except HydraException as exc:
                groups_only = [o for o in simple if "." not in o.split("=", 1)[0]]
                raise ConfigError(_explain(exc, config_name, groups_only)) from None
            problem = _wrong_type(config_name, overrides, composed)
            if problem:
                raise ConfigError(problem)
    finally:
        GlobalHydra.instance().clear()


# -- value types -----------------------------------------------------------------------------------------------------

_KIND_NAMES = {"bool": "true or false", "int": "an integer", "float": "a number", "none": "null"}
_ABSENT = object()


def _kinds(annotation: Any) -> set[str]:
    """The kinds of command-line value an annotation admits: bool, int, float, str, none, list, dict, or ``any`` for
    anything the check cannot judge (a class, a path, a callable, ``Any``)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_kinds(a) for a in typing.get_args(annotation)))
    if origin is typing.Literal:
        return {"str" if isinstance(a, str) else _value_kind(a) for a in typing.get_args(annotation)}
    base = origin or annotation
    simple = {bool: "bool", int: "int", float: "float", str: "str", type(None): "none"}
    if base in simple:
        return {simple[base]}
    if base is None:
        return {"none"}
    if isinstance(base, type) and issubclass(base, Mapping):
        return {"dict"}
    if isinstance(base, type) and issubclass(base, Sequence) and base is not str:
        return {"list"}
    return {"any"}


def _value_kind(value: Any) -> str:
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (type(None), "none")):
        if isinstance(value, kind):
            return name
    return "dict" if isinstance(value, Mapping) else "list" if isinstance(value, Sequence) else "any"


def _annotation(cfg: DictConfig, key: str) -> Any:
    """The annotation of the parameter that ``key`` is passed to, when its parent node instantiates a ``_target_``
    whose signature names it; ``inspect.Parameter.empty`` otherwise."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else None
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if not isinstance(target, str):
        return inspect.Parameter.empty
    try:
        from hydra.utils import get_object

        parameter = inspect.signature(get_object(target), eval_str=True).parameters.get(leaf)
    except Exception:  # an unimportable target or unresolvable annotations: Hydra will say so, or the default decides
        return inspect.Parameter.empty
    return inspect.Parameter.empty if parameter is None else parameter.annotation


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)


def _expected(admitted: set[str]) -> str:
    names = [_KIND_NAMES[k] for k in ("bool", "int", "float") if k in admitted]
    if "float" in admitted and "int" in admitted:
        names.remove("an integer")
    text = " or ".join(names)
    return f"{text} or null" if "none" in admitted else text


def _wrong_type(config_name: str, overrides: Sequence[str], composed: DictConfig) -> str | None:
    """One line for the first override whose value does not fit its key, None when all fit.

    A value is checked against the annotation of the parameter it is passed to (``trainer.max_steps`` -> ``int``;
    ``trainer.devices=auto`` fits ``list[int] | str | int``) and, without one, against the type of the key's
    default (``model.loss.flow: 2.0`` -> a number; a number key takes an int or a float). Only the mistakes a
    command line makes are refused: a word or a true/false for a number, a word for true/false, a fraction for an
    integer. Every value of a sweep is checked; a key added with ``+`` is not.
    """
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    loader = GlobalHydra.instance().config_loader()
    is_group = [bool(loader.get_group_options(o.key_or_group)) for o in parsed]
    groups = _first_values([o.input_line for o, group in zip(parsed, is_group, strict=True) if group])
    try:
        base = hydra.compose(config_name, overrides=groups)
    except HydraException:
        return None
    for override, group in zip(parsed, is_group, strict=True):
        key = override.key_or_group
        if group or key.startswith("hydra") or override.is_add() or override.is_delete():
            continue
        default = OmegaConf.select(base, key, default=_ABSENT, throw_on_resolution_failure=False)
        if default is _ABSENT or default is None or OmegaConf.is_config(default):
            continue
        annotation = _annotation(base, key)
        if annotation is inspect.Parameter.empty:
            kind = _value_kind(default)
            admitted = {"bool"} if kind == "bool" else {"int", "float"} if kind in ("int", "float") else {"any"}
        else:
            admitted = _kinds(annotation)
        if "any" in admitted or "str" in admitted or not admitted & {"bool", "int", "float"}:
            continue
        for given, value in _values(override, composed):
            kind = _value_kind(value)
            if kind == "float" and "int" in admitted and float(value).is_integer():
                continue  # 3000.0 for an integer: harmless, and what a search space's bounds look like
            if kind in admitted or (kind == "int" and "float" in admitted) or kind not in ("str", "bool", "float"):
                continue
            got = f"the string {value!r}" if kind == "str" else _show(value)
            return f"{key}={given}: expected {_expected(admitted)} (default {_show(default)}), got {got}"
    return None


def _values(override: Override, composed: DictConfig) -> list[tuple[str, Any]]:
    """(as given, value) of every value an override gives its key: the composed (resolved) value of a single value,
    every value of a sweep (as parsed)."""
    if not override.is_sweep_override():
        try:
            value = OmegaConf.select(composed, override.key_or_group, throw_on_resolution_failure=True)
        except Exception:  # an interpolation that does not resolve here: the job will say so
            return []
        return [(override.input_line.split("=", 1)[1], value)]
    sweep = override.value()
    values = [sweep.start, sweep.end] if isinstance(sweep, IntervalSweep) else list(override.sweep_iterator())
    return [(v if isinstance(v, str) else _show(v), v) for v in values if not (isinstance(v, str) and "${" in v)]


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


def config_groups() -> dict[str, list[str]]:
    """The suite's config groups (folders of conf/, Hydra's own excluded) and their options, sorted."""
    root = config_dir()
    groups: dict[str, list[str]] = {}
    for folder in sorted(p for p in root.rglob("*") if p.is_dir()):
        group = folder.relative_to(root).as_posix()
        options = sorted(f.stem for f in folder.glob("*.yaml"))
        options = [o for o in options if not o.startswith("_")]  # _common.yaml and the like: includes, not options
        if options and group.split("/")[0] != "hydra":
            groups[group] = options
    return groups


def fast_help(config_name: str, argv: Sequence[str]) -> str | None:
    """The text of ``--help`` (None without the flag), rendered from the entry point's ``hydra.help.template``
    like Hydra's, but with the config groups listed from the files of conf/: Hydra composes every group option to
    list them, which takes seconds, before torch would even be imported."""
    if not any(arg in HELP_FLAGS for arg in argv):
        return None
    overrides, custom = _split_argv(argv)
    if custom:
        return None
    GlobalHydra.instance().clear()
    try:
        with hydra.initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = hydra.compose(config_name, overrides=_first_values(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    template = str(cfg.hydra.help.template)
    groups = "\n".join(f"{group}: {', '.join(options)}" for group, options in config_groups().items())
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

    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(guarded)()
