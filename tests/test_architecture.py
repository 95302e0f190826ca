"""No two packages of `app/` import each other, directly or around a loop.

Every module under `app/` is parsed (imports inside functions count too) and each import is
reduced to its package: `app.orders.service` -> `app.orders`, a top-level module such as
`app.locks` is its own. A package's `routes.py` is the HTTP layer on top of every package (it
calls flows and services and uses `app.security`, which itself reads users), so it counts as a
node of its own: `app.users.routes`.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"

# Cycles another change of the same step removes (catalog and inventory stop importing each
# other, issue 9 item 4). The test fails as soon as one of them is gone, so that its entry is
# deleted with it.


def _module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 3 and parts[2] == "routes":
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:  # `from app.orders import flows` imports a module
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return {name for name in found if name == "app" or name.startswith("app.")}


def package_graph() -> dict[str, set[str]]:
    paths = sorted(APP.rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    graph: dict[str, set[str]] = defaultdict(set)
    for path in paths:
        source = _unit(_module_name(path))
        graph[source]
        for target in map(_unit, _imports(ast.parse(path.read_text(), str(path)), modules)):
            if target not in (source, "app"):
                graph[source].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more packages, each shown as one loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_loop(graph, group) for group in groups]


def _loop(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """One import loop through the group, from its first package back to it (breadth first)."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no loop through {sorted(group)}")


def test_no_package_imports_another_in_a_cycle() -> None:
    found = cycles(package_graph())
    assert not found, "packages import each other: " + "; ".join(
        " -> ".join(loop) for loop in found
    )


def test_the_cycle_check_finds_a_loop_and_names_it() -> None:
    graph = {
        "app.orders": {"app.payments", "app.models"},
        "app.payments": {"app.checkout"},
        "app.checkout": {"app.orders"},
        "app.models": set(),
    }
    assert cycles(graph) == [["app.checkout", "app.orders", "app.payments", "app.checkout"]]
