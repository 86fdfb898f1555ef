"""The package's layers hold: every import (function-level ones too) goes to the same or an
earlier layer, and no two modules import each other, however indirectly.

    leaves (errors, io, tables, tiny, figures) -> data -> methods -> config -> training -> judges
    -> evaluation -> scenarios -> the entry points (cli, __main__, api, the package itself)

config sits after methods: a run's typed settings name its method and that method's own typed
hyper-parameters, and are validated against the registry before any work.

A leaf imports only other leaves; every layer may import the leaves.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "unlearnlm"
LEAVES = {"errors", "io", "tables", "tiny", "figures"}
ORDER = ["data", "methods", "config", "training", "judges", "evaluation", "scenarios"]
ENTRY_POINTS = {"cli", "__main__", "api", ""}  # "" = unlearnlm/__init__.py


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every unlearnlm module ``name`` imports, at any depth of its code."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from . import metrics` names a module; `from .x import f` names a member of x.
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import unlearnlm.x.y` of a package member
                target = target.rpartition(".")[0]
            if target.startswith("unlearnlm") and target != name:
                found.add(target)
    return found


def layer(name: str) -> tuple[int, str]:
    """(rank, layer name): leaves 0, then ORDER, entry points last."""
    part = name.split(".")[1] if "." in name else ""
    if part in LEAVES:
        return 0, part
    if part in ORDER:
        return 1 + ORDER.index(part), part
    if part in ENTRY_POINTS:
        return 1 + len(ORDER), "entry point"
    raise AssertionError(f"module {name} is in no layer: add it to tests/test_layers.py")


GRAPH = {name: imports_of(name) for name in MODULES}


def test_every_module_is_read():
    assert {"unlearnlm.config", "unlearnlm.judges.loading", "unlearnlm.data.world", "unlearnlm.cli"} <= set(GRAPH)
    # The reader sees function-level imports too: cli imports the API, and the API the commands'
    # modules, inside functions.
    assert "unlearnlm.api" in GRAPH["unlearnlm.cli"] and "unlearnlm.training.run" in GRAPH["unlearnlm.api"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_import_of_a_later_layer(name):
    rank, own = layer(name)
    for target in sorted(GRAPH[name]):
        target_rank, target_layer = layer(target)
        if rank == 0:
            assert target_rank == 0, f"{name} is a leaf and imports {target} ({target_layer})"
        assert target_rank <= rank, f"{name} ({own}) imports {target} of a later layer ({target_layer})"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle():
    # A package's __init__ re-exporting its own modules is no cycle of behaviour.
    graph = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in GRAPH.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_can_fail():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer("unlearnlm.training.run")[0] < layer("unlearnlm.evaluation.callback")[0]
    assert layer("unlearnlm.methods.registry")[0] < layer("unlearnlm.config")[0] < layer("unlearnlm.training.run")[0]
    assert layer("unlearnlm.io")[0] == 0 and layer("unlearnlm.cli")[0] > layer("unlearnlm.scenarios.demo")[0]
