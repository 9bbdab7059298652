"""Command-line overrides checked before Hydra runs: a mistyped key, an unknown choice or a value of the wrong type is
refused in one line.

    check_overrides("train", ["model.lose.flow=2"])   # ConfigError: unknown config key 'model.lose.flow' ...

Hydra reports a mistyped key as "Key 'flwo' is not in struct" without saying what the valid keys are, and passes a
value of the wrong type (``trainer.max_steps=abc``) on to the code, which fails far away from the command line.
:func:`check_overrides` composes the config once with the command line's overrides (first value of each sweep) and
turns a failure into one line that names the key and lists the valid choices; a value whose type does not fit its key
(the annotation of the parameter it is passed to, else the type of its default) is refused in one line naming the key
and the expected type.
"""

from __future__ import annotations

import difflib
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from vad.app.config_search import composing
from vad.errors import ConfigError

# Hydra flags that take a value; with a custom config path or name the check is skipped (advanced use). A user's
# config folder (--config-dir) is checked with the rest: vad.app.config_search puts it on the search path.
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "--experimental-rerun", "--config-dir", "-cd"}
_CUSTOM_CONFIG_FLAGS = {"--config-path", "-cp", "--config-name", "-cn"}


def split_argv(argv: Sequence[str]) -> tuple[list[str], bool]:
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


def first_values(overrides: Sequence[str]) -> list[str]:
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
    overrides, custom = split_argv(argv)
    if custom:
        return
    try:
        simple = first_values(overrides)
    except HydraException as exc:
        raise ConfigError(f"cannot parse the command line overrides: {' '.join(str(exc).split())}") from None
    with composing(argv):
        try:
            composed = hydra.compose(config_name, overrides=simple)
        except HydraException as exc:
            groups_only = [o for o in simple if "." not in o.split("=", 1)[0]]
            raise ConfigError(_explain(exc, config_name, groups_only)) from None
        problem = _wrong_type(config_name, overrides, composed)
        if problem:
            raise ConfigError(problem)


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
    groups = first_values([o.input_line for o, group in zip(parsed, is_group, strict=True) if group])
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
