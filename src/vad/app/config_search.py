"""Where the entry points find their configs: the suite's own (``pkg://vad.conf``, or the folder ``VAD_CONFIG_DIR``
names), behind a user's folder given with ``--config-dir`` and ahead of the entries of a ``hydra.searchpath=[...]``
override, in the order Hydra searches them for the run. The checks made before Hydra runs (overrides, ``--help``)
compose on this same search path, so a user's own groups and presets pass them:

    vad-train --config-dir my_conf experiment=mine                  # my_conf/experiment/mine.yaml
    vad-train 'hydra.searchpath=[file://my_conf]' experiment=mine
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra import version
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from vad import config_dir, config_search_path
from vad.errors import ConfigError

_CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def user_config_dir(argv: Sequence[str]) -> Path | None:
    """The absolute folder of ``--config-dir <folder>`` (or ``-cd``) in ``argv``, None without one; Hydra takes the
    last one given."""
    folder = None
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in _CONFIG_DIR_FLAGS:
            folder = value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    if folder is None:
        return None
    path = Path(os.path.abspath(folder))
    if not path.is_dir():
        raise ConfigError(f"--config-dir {folder}: additional config directory '{path}' not found")
    return path


def searchpath_entries(argv: Sequence[str]) -> list[str]:
    """The entries of a ``hydra.searchpath=[...]`` override in ``argv`` (``file://<folder>``, ``pkg://<package>``)."""
    for arg in argv:
        if arg.lstrip("+").split("=", 1)[0] == "hydra.searchpath":
            try:
                value = OverridesParser.create().parse_override(arg).value()
            except HydraException as exc:
                raise ConfigError(f"cannot parse {arg}: {' '.join(str(exc).split())}") from None
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{arg}: hydra.searchpath must be a list of strings, e.g. [file://my_conf]")
            return value
    return []


@contextmanager
def composing(argv: Sequence[str]) -> Iterator[None]:
    """Hydra initialised for ``hydra.compose`` on the search path a run of ``argv`` gets (cleared afterwards).

    ``hydra.searchpath`` is placed on the search path here, so the composing overrides leave it out."""
    search_path = create_config_search_path(config_search_path())
    folder = user_config_dir(argv)
    if folder is not None:
        search_path.prepend(provider="command-line", path=f"file://{folder}")
    for entry in searchpath_entries(argv):
        search_path.prepend(provider="hydra.searchpath in command-line", path=entry, anchor=SearchPathQuery("schema"))
    version.setbase("1.3")
    GlobalHydra.instance().clear()
    try:
        Hydra.create_main_hydra2(task_name="app", config_search_path=search_path)
        yield
    finally:
        GlobalHydra.instance().clear()


def config_groups(argv: Sequence[str] = ()) -> dict[str, list[str]]:
    """The config groups (folders, Hydra's own excluded) and their options, sorted: the suite's, with those of the
    user's folders in ``argv`` (``--config-dir``, ``file://`` entries of ``hydra.searchpath``) added."""
    roots = [config_dir()]
    folder = user_config_dir(argv)
    roots += [folder] if folder is not None else []
    roots += [Path(e.removeprefix("file://")) for e in searchpath_entries(argv) if e.startswith("file://")]
    groups: dict[str, set[str]] = {}
    for root in (r for r in roots if r.is_dir()):
        for folder in (p for p in root.rglob("*") if p.is_dir()):
            group = folder.relative_to(root).as_posix()
            # _common.yaml and the like: includes, not options
            options = {f.stem for f in folder.glob("*.yaml") if not f.stem.startswith("_")}
            if options and group.split("/")[0] != "hydra":
                groups.setdefault(group, set()).update(options)
    return {group: sorted(groups[group]) for group in sorted(groups, key=lambda g: g.split("/"))}
