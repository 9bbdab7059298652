"""The architecture of src/vad as tests: the layers of pyproject.toml's import-linter contracts, no import cycle
(between files or between sub-packages), entry points that never import each other, modules of at most 400 lines and a
docstring on every package. Each failure lists everything that is wrong, with the imports (file:line) to look at."""

from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
ENTRY_POINTS = ("train", "evaluate", "prepare", "score", "calibrate", "export")
MAX_LINES = 400
# the synthetic scene generator: one procedural scene, long but not mixing reading, computing and presenting
LONG_MODULES = {SRC / "vad" / "data" / "synthetic.py"}


@dataclass(frozen=True)
class Import:
    """One import of a vad module by another, resolved to the module it names."""

    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}  ({_files()[self.source].relative_to(REPO)}:{self.line})"


@functools.cache
def _files() -> dict[str, Path]:
    """Module name -> file, for every module of src/vad (a package by its ``__init__.py``)."""
    files = {}
    for path in sorted((SRC / "vad").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _named_module(name: str) -> str | None:
    """The vad module an import names: the longest prefix of ``name`` that is a module (``from vad.x import f``)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in _files():
            return candidate
    return None


def _imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the module's package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


@functools.cache
def _imports() -> tuple[Import, ...]:
    """Every import of one vad module by another, inside functions and ``TYPE_CHECKING`` blocks too."""
    found = set()
    for module, path in _files().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for name in _imported_names(node, module, path.name == "__init__.py"):
                target = _named_module(name) if name.split(".")[0] == "vad" else None
                if target is not None and target != module:
                    found.add(Import(module, target, node.lineno))
    return tuple(sorted(found, key=lambda i: (i.source, i.target, i.line)))


def _cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def _package(module: str) -> str:
    """The sub-package a module belongs to (a package stands for itself); a module at the root is a unit of its own,
    the core and the entry points' hand-overs being separate layers."""
    if _files()[module].name == "__init__.py" or module.count(".") == 1:
        return module
    return module.rpartition(".")[0]


def _report(title: str, cycles: list[list[str]], imports: Iterable[Import], unit=lambda m: m) -> str:
    lines = [f"{len(cycles)} {title}:"]
    for cycle in cycles:
        members = set(cycle)
        lines.append(f"  {' <-> '.join(cycle)}, through:")
        lines += [
            f"    {i}"
            for i in imports
            if unit(i.source) in members and unit(i.target) in members and unit(i.source) != unit(i.target)
        ]
    return "\n".join(lines)


def test_import_linter_contracts_are_kept() -> None:
    """The layers and independence contracts of pyproject.toml ([tool.importlinter]), as ``make lint`` checks them."""
    lint_imports = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    proc = subprocess.run(
        [sys.executable, "-c", lint_imports, "--no-cache"],
        cwd=REPO,
        env=dict(os.environ, COLUMNS="250", NO_COLOR="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    broken = [line.removesuffix(" BROKEN").strip() for line in output.splitlines() if line.endswith(" BROKEN")]
    details = output[output.find("Broken contracts") :] if "Broken contracts" in output else output
    assert proc.returncode == 0, (
        f"import-linter contracts broken ({len(broken)}):\n" + "".join(f"  - {b}\n" for b in broken) + "\n" + details
    )


def test_no_import_cycle_between_files() -> None:
    cycles = _cycles((i.source, i.target) for i in _imports())
    assert not cycles, _report("file-level import cycles", cycles, _imports())


def test_no_import_cycle_between_sub_packages() -> None:
    """Every module collapsed to its package (vad.data.clips -> vad.data); a package and its sub-package
    (vad.evaluation, vad.evaluation.pixel) count as two, so their importing each other is a cycle too."""
    edges = {(_package(i.source), _package(i.target)) for i in _imports()}
    cycles = _cycles((a, b) for a, b in edges if a != b)
    assert not cycles, _report("sub-package import cycles", cycles, _imports(), unit=_package)


def test_entry_points_never_import_each_other() -> None:
    entries = {f"vad.app.{name}" for name in ENTRY_POINTS} | {f"vad.{name}" for name in ENTRY_POINTS}
    # vad/train.py hands over to vad/app/train.py: the one import of an entry point allowed
    bad = [
        i
        for i in _imports()
        if i.source in entries and i.target in entries and i.target != i.source.replace("vad.", "vad.app.", 1)
    ]
    assert not bad, (
        f"{len(bad)} imports of an entry point by another (move what they share to vad.app.cli or the core):\n"
        + "\n".join(f"  {i}" for i in bad)
    )


def test_no_module_over_400_lines() -> None:
    long = sorted(
        (len(path.read_text().splitlines()), path.relative_to(REPO))
        for path in _files().values()
        if path not in LONG_MODULES
    )
    over = [f"  {path}: {n} lines" for n, path in long if n > MAX_LINES]
    assert not over, f"{len(over)} modules over {MAX_LINES} lines (split them):\n" + "\n".join(over)


def test_every_package_says_what_it_holds() -> None:
    folders = sorted({p.parent for p in (SRC / "vad").rglob("*.py") if "__pycache__" not in p.parts})
    problems = []
    for folder in folders:
        init = folder / "__init__.py"
        if not init.exists():
            problems.append(f"  {folder.relative_to(REPO)}: no __init__.py (a package with a docstring)")
        elif not ast.get_docstring(ast.parse(init.read_text())):
            problems.append(f"  {init.relative_to(REPO)}: no docstring saying what the package holds")
    assert not problems, f"{len(problems)} packages without a docstring:\n" + "\n".join(problems)
