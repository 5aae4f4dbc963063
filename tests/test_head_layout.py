"""The head's code stays in small pieces: no module over 700 lines, no class
over 40 methods, no import cycle between its modules and no import inside a
function (which is how cycles used to be hidden)."""

import ast
import pathlib

HEAD = pathlib.Path(__file__).resolve().parent.parent / "zray" / "head"


def _modules():
    return {path.stem: ast.parse(path.read_text()) for path in HEAD.glob("*.py")}


def _head_imports(tree) -> set:
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("zray.head."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names
                      if a.name.startswith("zray.head.")}
    return found


def test_modules_and_classes_stay_small():
    for path in HEAD.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 700, path.name
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                methods = [f for f in node.body if isinstance(f, ast.FunctionDef)]
                assert len(methods) <= 40, f"{name}.{node.name}: {len(methods)} methods"


def test_no_import_inside_a_function():
    for name, tree in _modules().items():
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [n for n in ast.walk(func) if isinstance(n, (ast.Import, ast.ImportFrom))]
                assert not inner, f"{name}.{func.name} imports inside a function"


def test_no_import_cycle_between_head_modules():
    graph = {name: _head_imports(tree) for name, tree in _modules().items()}

    def visit(name, path):
        assert name not in path, "import cycle: " + " -> ".join(path + [name])
        for nxt in graph.get(name, ()):
            visit(nxt, path + [name])

    for name in graph:
        visit(name, [])
    assert graph["records"] == set(), "records.py imports no other head module"
