"""The shape of the code: no import cycles inside the package, the loader a leaf, no
function over 60 lines and no class over 300."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[2] / "src" / "preforkd"


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules `name` imports at module level (not inside functions)."""
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m in known and m != name}


def test_no_import_cycles_and_the_loader_is_a_leaf():
    mods = modules()
    graph = {name: imports(name, tree, set(mods)) for name, tree in mods.items()}
    assert graph["preforkd.loader"] == set()
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        assert state.get(name) != 1, "import cycle: " + " -> ".join(path + [name])
        state[name] = 1
        for dep in sorted(graph[name]):
            visit(dep, path + [name])
        state[name] = 2

    for name in sorted(graph):
        visit(name, [])


def test_functions_and_classes_stay_small():
    too_long = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            size = (node.end_lineno or 0) - node.lineno + 1 if hasattr(node, "lineno") else 0
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > 60:
                too_long.append(f"{name}.{node.name}: {size} lines")
            elif isinstance(node, ast.ClassDef) and size > 300:
                too_long.append(f"class {name}.{node.name}: {size} lines")
    assert not too_long, too_long


def test_test_files_have_names_of_their_own():
    """pytest imports test modules by their file name: two of one name in different
    folders stop the whole run at collection."""
    names = [p.name for p in (SRC.parents[1] / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
