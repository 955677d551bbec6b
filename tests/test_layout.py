"""The shape of the house: no import cycles inside numbacnn, no source file over 400 lines.

Imports are read statically with ``ast``, every one of them: module level, inside functions
(lazy imports) and inside ``try`` blocks; only ``if TYPE_CHECKING:`` blocks are skipped, since
they never run. A lazy import counts as an edge because it hides a cycle from the interpreter,
not from the design: two modules that import each other, however late, are one concept with
two homes (the cycles this test first found were exactly that: the checkpoint format split
between ``_checkpoint`` and ``train``, ``CliError`` defined above the command modules that
raise it, ``__version__`` read back from the package ``__init__`` by the registry).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400


def _packages() -> list[Path]:
    return [ROOT / "numbacnn", *sorted(p for p in (ROOT / "plugins").glob("*/numbacnn_*") if p.is_dir())]


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    found = {}
    for pkg in _packages():
        for path in sorted(pkg.rglob("*.py")):
            parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every import statement with whether it runs lazily (inside a function), skipping
    ``if TYPE_CHECKING:`` bodies."""
    def walk(node: ast.AST, lazy: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    yield from walk(sub, lazy)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, lazy
            yield from walk(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    yield from walk(tree, False)


def import_graph() -> dict[str, dict[str, tuple[int, bool]]]:
    """module -> {imported module: (line, lazy)} for imports between numbacnn's own modules.

    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``
    itself (its ``__init__``). The parent packages an import loads first are no edges: Python
    imports a package before any of its modules, whatever the modules import.
    """
    modules = _modules()
    graph: dict[str, dict[str, tuple[int, bool]]] = {}
    for name, (path, is_pkg) in modules.items():
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        edges: dict[str, tuple[int, bool]] = {}
        for node, lazy in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = here[:len(here) - node.level + 1] if node.level else []
                source = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                           for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    old = edges.get(target)
                    if old is None or (old[1] and not lazy):  # a module-level edge outranks a lazy one
                        edges[target] = (node.lineno, lazy)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, tuple[int, bool]]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    found: list[list[str]] = []
    for component in components:
        inside = set(component)
        for start in sorted(component):
            cycle = _shortest_cycle(graph, start, inside)
            # rotated to start at its least module, so one cycle seen from two starts is one
            at = cycle.index(min(cycle[:-1]))
            cycle = cycle[at:-1] + cycle[:at] + [cycle[at]]
            if cycle not in found:
                found.append(cycle)
    return found


def _shortest_cycle(graph: dict[str, dict[str, tuple[int, bool]]], start: str, inside: set[str]) -> list[str]:
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                return paths[v] + [start]
            if w in inside and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"{start} is in a strongly connected component but on no cycle")


def _describe(cycle: list[str], graph: dict[str, dict[str, tuple[int, bool]]]) -> str:
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        line, lazy = graph[a][b]
        steps.append(f"{a} (line {line}{', inside a function' if lazy else ''}) imports {b}")
    return "; ".join(steps)


def test_no_import_cycles():
    graph = import_graph()
    assert "numbacnn.executor" in graph.get("numbacnn.model", {}), "the import walk found nothing: has the layout moved?"
    found = cycles(graph)
    assert not found, "import cycles inside numbacnn (a lazy import counts too; give the shared concept one " \
                      "home that both sides import):\n" + "\n".join(_describe(c, graph) for c in found)


def test_the_cycle_finder_names_lazy_and_module_level_cycles():
    graph = {"a": {"b": (3, False)}, "b": {"c": (7, True)}, "c": {"a": (1, False)}, "d": {"a": (2, False)}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert "b (line 7, inside a function) imports c" in _describe(["a", "b", "c", "a"], graph)
    assert cycles({"a": {"b": (1, False)}, "b": {}}) == []


def test_imports_are_read_from_functions_and_not_from_type_checking():
    tree = ast.parse("import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import json\n"
                     "def f():\n    from . import x\n")
    seen = [(type(n).__name__, getattr(n, "module", None) or n.names[0].name, lazy) for n, lazy in _imports(tree)]
    assert seen == [("Import", "os", False), ("ImportFrom", "typing", False), ("ImportFrom", "x", True)]


def test_no_source_file_over_400_lines():
    files = [p for pkg in (ROOT / "numbacnn", ROOT / "plugins") for p in sorted(pkg.rglob("*.py"))]
    assert len(files) > 20, "no sources found: has the layout moved?"
    long = {str(p.relative_to(ROOT)): n for p in files
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (split them by stem or concept, never into utils.py): " + \
        ", ".join(f"{k} ({v} lines)" for k, v in sorted(long.items()))
