"""Command-line plumbing shared by the Hydra entry points: override checking and one-line errors.

Hydra reports a mistyped key as "Key 'flwo' is not in struct" without saying what the valid keys are. Before Hydra
runs, :func:`check_overrides` composes the config once with the command line's overrides (first value of each
sweep) and turns a failure into one line that names the key and lists the valid choices.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from vad import config_dir
from vad.errors import ConfigError, VadError

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


def run_hydra(config_name: str, task: Callable[[DictConfig], Any]) -> None:
    """Run ``task`` as a Hydra app on ``conf/<config_name>.yaml``; VadErrors become ``error: ...`` and exit 2."""
    try:
        check_overrides(config_name, sys.argv[1:])
    except VadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    def guarded(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except Exception as exc:
            # hydra.utils.instantiate wraps a constructor's error in InstantiationException: find ours inside.
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, VadError):
                cause = cause.__cause__
            if cause is None:
                raise
            print(f"error: {cause}", file=sys.stderr)
            raise SystemExit(2) from None

    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(guarded)()
