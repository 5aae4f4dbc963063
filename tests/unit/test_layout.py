"""The code's shape: small modules and classes, no import cycles (checked with ast)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

PACKAGE = Path(__file__).resolve().parents[2] / "zray"
MAX_MODULE_LINES = 700
MAX_CLASS_METHODS = 40


def modules() -> dict:
    """Dotted module name -> parsed tree, for every module in zray/."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = (path, ast.parse(path.read_text(), str(path)))
    return found


def imports_of(name: str, tree: ast.Module, known: set, top_level_only: bool) -> set:
    """The zray modules ``name`` imports (at module level only, when asked)."""
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.If):          # e.g. if TYPE_CHECKING: not an import cycle
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                package = name.rsplit(".", node.level)[0]
                base = f"{package}.{node.module}"
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        found.update(t for t in targets if t in known and t != name)
    return found


def test_no_module_is_too_long():
    long = {name: len(path.read_text().splitlines()) for name, (path, _) in modules().items()
            if len(path.read_text().splitlines()) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_class_has_too_many_methods():
    big = {}
    for name, (_, tree) in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                count = sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                            for n in node.body)
                if count > MAX_CLASS_METHODS:
                    big[f"{name}.{node.name}"] = count
    assert not big, f"classes over {MAX_CLASS_METHODS} methods: {big}"


def test_no_import_cycle():
    found = modules()
    known = set(found)
    # imports inside functions count too: they hide a cycle, they do not remove it
    graph = {name: imports_of(name, tree, known, top_level_only=False)
             for name, (_, tree) in found.items()}
    # a package importing its own submodules is how packages work, and zray's
    # public API re-exports everything lazily (PEP 562)
    for name in graph:
        graph[name] = {t for t in graph[name]
                       if not t.startswith(name + ".") and t != "zray"}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "active"
        for target in sorted(graph[node]):
            if state.get(target) == "active":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
