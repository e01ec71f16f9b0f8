"""The project's import graph, read from the source with `ast`: no import cycles among the modules
of maskgwm, evals and repro, and the layering evals <- maskgwm <- repro.

Imports inside functions count (a deferred import still makes a dependency); those under
`if TYPE_CHECKING:` do not. A package's __init__ importing its own submodules is not a cycle.
"""
from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("maskgwm", "evals", "repro")
# Standalone scripts that other interpreters run (Vista's Python), not part of the import graph.
SKIPPED = ("repro/vista/double/", "repro/vista/probe.py")
# Which top-level packages each package may import (its own always).
MAY_IMPORT = {"evals": set(), "maskgwm": {"evals"}, "repro": {"evals", "maskgwm"}}


def source_files() -> dict[str, Path]:
    """Module name -> file, for every .py of the packages except the skipped scripts."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if any(rel.startswith(skip) for skip in SKIPPED):
                continue
            parts = rel[: -len(".py")].split("/")
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_nodes(node: ast.AST):
    """Every Import/ImportFrom under node, at any depth, except under `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and is_type_checking(child.test):
            for stmt in child.orelse:
                yield from import_nodes(ast.Module(body=[stmt], type_ignores=[]))
        else:
            yield from import_nodes(child)


def known(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest project module that name is or lies in (an attribute path), else None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that module imports (resolving relative and `from pkg import sub`)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            targets = [f"{prefix}.{alias.name}" for alias in node.names if alias.name != "*"]
            targets = [t if t in modules else prefix for t in targets] or [prefix]
        found.update(hit for t in targets if (hit := known(t, modules)) and hit != module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = source_files()
    graph = {}
    for module, path in modules.items():
        deps = imports_of(module, path, modules)
        if path.name == "__init__.py":  # a package importing its own submodules is no cycle
            deps = {dep for dep in deps if not dep.startswith(module + ".")}
        graph[module] = deps
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one module."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph[node]):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def shortest_cycle(graph: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one component."""
    parent, queue = {start: None}, deque([start])
    while queue:
        node = queue.popleft()
        for dep in sorted(graph[node] & within):
            if dep == start:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return path[::-1] + [start]
            if dep not in parent:
                parent[dep] = node
                queue.append(dep)
    raise AssertionError(f"{start} is on no cycle")


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """Each cycle as `a -> b -> a`: the shortest one through each module of each component."""
    found = set()
    for component in strongly_connected(graph):
        for start in component:
            path = shortest_cycle(graph, start, set(component))
            rotate = path.index(min(path[:-1]))
            canonical = path[rotate:-1] + path[:rotate] + [path[rotate]]
            found.add(" -> ".join(canonical))
    return sorted(found)


def test_the_graph_is_read_from_every_package():
    graph = import_graph()
    assert {module.split(".")[0] for module in graph} == set(PACKAGES)
    assert "maskgwm.model.dit" in graph["maskgwm.model.reconstruction"]   # module level
    assert "evals.extractors" in graph["evals.bench"]           # relative, inside a function
    assert "maskgwm.train.cli" in graph["repro.cli"]           # `from package import module`


def test_imports_are_resolved(tmp_path):
    source = tmp_path / "sub.py"
    source.write_text("from typing import TYPE_CHECKING\n"
                      "from . import VALUE\n"
                      "from .base import helper\n"
                      "if TYPE_CHECKING:\n"
                      "    from pkg.typed import Thing\n"
                      "def later():\n"
                      "    import pkg.deferred.inner\n")
    modules = dict.fromkeys(["pkg", "pkg.sub", "pkg.base", "pkg.typed", "pkg.deferred"])
    assert imports_of("pkg.sub", source, modules) == {"pkg", "pkg.base", "pkg.deferred"}


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(found)


def test_layering():
    bad = [f"{module} imports {dep}" for module, deps in sorted(import_graph().items())
           for dep in sorted(deps)
           if dep.split(".")[0] not in MAY_IMPORT[module.split(".")[0]] | {module.split(".")[0]}]
    assert not bad, "layering (evals <- maskgwm <- repro) broken:\n" + "\n".join(bad)
