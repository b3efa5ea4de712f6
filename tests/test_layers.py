"""The floors of the house (STYLE.md): face -> jobs -> science (inference, variants, explain,
training) -> model, runs, data -> io, and nothing low imports anything higher; options and base codes
are leaves. Read from the source with ast, so an import inside a function or under TYPE_CHECKING
counts as much as one at the top of a module."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import epiformer_cli

PACKAGE = Path(epiformer_cli.__file__).resolve().parent
ROOT = "epiformer_cli"

#: an import: (importing module, line, imported module of the package)
Edge = Tuple[str, int, str]


def _modules(package: Path) -> Dict[str, Path]:
    """{dotted module name: file} of every module of the package (a package is its __init__)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _target(name: str, modules: Dict[str, Path]) -> Optional[str]:
    """The deepest module of the package that ``name`` names or lies in; None outside the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


@lru_cache(maxsize=None)
def edges(package: Path = PACKAGE) -> Tuple[Edge, ...]:
    """Every import of one module of the package by another, with its line."""
    modules = _modules(package)
    out: List[Edge] = []
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, one level up per extra dot
                    anchor = module.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import name`: name is a submodule, or something defined in pkg
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = _target(name, modules)
                if target is not None and target != module:
                    out.append((module, node.lineno, target))
    return tuple(sorted(set(out)))


def floor(module: str) -> str:
    """The first name below the package: ``epiformer_cli.io.genome`` -> ``io``; the package itself -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _show(found: List[Edge]) -> str:
    return "\n".join(f"{module} (line {line}) imports {target}" for module, line, target in found)


def test_the_import_graph_is_read():
    """The checks below are only as good as the graph: it holds imports at the top, inside
    functions and of a submodule named in ``from package import module``."""
    found = {(module, target) for module, _line, target in edges()}
    assert len(_modules(PACKAGE)) > 50
    assert ("epiformer_cli.io.genome", "epiformer_cli.bases") in found  # top of the module
    assert ("epiformer_cli.jobs.demo", "epiformer_cli.demo") in found  # inside a function
    assert ("epiformer_cli.demo.readme", "epiformer_cli.demo.layout") in found  # from demo import layout


def test_options_and_base_codes_are_leaves():
    """options.py and bases.py import nothing of the package but the exceptions."""
    leaves = {"epiformer_cli.options", "epiformer_cli.bases"}
    found = [e for e in edges() if e[0] in leaves and e[2] != "epiformer_cli.errors"]
    assert not found, "a leaf imports the package:\n" + _show(found)


def test_io_imports_nothing_above_it():
    """The formats are the ground floor: they may use the base codes and the exceptions, never
    the data, the model, the runs, the science, the jobs, the face or the demo."""
    above = {"data", "model", "runs", "training", "inference", "variants", "explain", "jobs", "cli", "demo",
             "plotting", "api"}
    found = [e for e in edges() if floor(e[0]) == "io" and floor(e[2]) in above]
    assert not found, "io/ imports a higher floor:\n" + _show(found)


def test_explain_and_variants_do_not_import_training():
    """The science of one job does not borrow from another's: shared pieces (the plotting module,
    the base codes) live below both."""
    found = [e for e in edges() if floor(e[0]) in ("explain", "variants") and floor(e[2]) == "training"]
    assert not found, "explain/ or variants/ imports training/:\n" + _show(found)


def _cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_demo_modules_import_each_other_without_a_circle():
    """The demo's modules form layers (layout and pwm below variants below readme below the
    generator), so each can be read, imported and tested from the bottom up."""
    graph: Dict[str, Set[str]] = {}
    for module, _line, target in edges():
        if floor(module) == "demo" and floor(target) == "demo":
            graph.setdefault(module, set()).add(target)
    cycle = _cycle(graph)
    assert cycle is None, "the demo's modules import each other in a circle: " + " -> ".join(cycle)


#: The floors, lowest first: a module imports its own floor or lower ones, never a higher one.
#: A new top-level module or folder must be given its floor here (the test below says so).
FLOORS = [
    {"errors", "bases", "options", "progress", "names"},  # leaves
    {"io", "device", "plotting", "pages"},  # formats, the device rule, plots, report pages
    {"runs", "threads"},  # the run layer: destinations, run folders, checksums, claims, shards; the CPUs (its cgroup walk)
    {"data"},  # stores and encodings, on the run layer
    {"model"},
    {"inference", "training", "variants", "explain", "motifs", "pseudobulk", "evaluate", "demo"},  # the science of each job
    {"jobs"},  # one module per command
    {"cli", "api", "__main__", ""},  # the faces (and the package, which offers the notebook API)
]


def test_every_module_has_a_floor():
    level = {name for names in FLOORS for name in names}
    unplaced = sorted({floor(m) for m in _modules(PACKAGE)} - level)
    assert not unplaced, f"give these a floor in tests/test_layers.py FLOORS: {unplaced}"


def test_every_import_goes_down_or_stays_on_its_floor():
    """The rule of STYLE.md's house, for every module: data flows one way."""
    level = {name: i for i, names in enumerate(FLOORS) for name in names}
    # `from epiformer_cli import __version__` reads the package's own __init__ (which imports nothing
    # until the notebook API is asked for): it names no floor
    found = [e for e in edges() if e[2] != ROOT and level.get(floor(e[2]), 0) > level.get(floor(e[0]), len(FLOORS))]
    assert not found, "imports from a lower floor to a higher one:\n" + _show(found)


def test_the_package_has_no_import_cycle():
    """No two modules import each other, directly or around a circle (a cycle is a floor that
    cannot be read, imported or tested from the bottom up)."""
    graph: Dict[str, Set[str]] = {}
    for module, _line, target in edges():
        if target != ROOT:  # `from epiformer_cli import __version__`: the lazy __init__, not a module cycle
            graph.setdefault(module, set()).add(target)
    cycle = _cycle(graph)
    assert cycle is None, "an import cycle: " + " -> ".join(cycle)
