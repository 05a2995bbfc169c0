"""The package's import graph has no circle, counting every import the AST holds.

Module-level, function-level and ``TYPE_CHECKING`` imports all count: a lazy import
still means the importing module depends on the imported one, and a circle among them
means data (or control) flows both ways between two jobs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import qwen_magic

PACKAGE = Path(qwen_magic.__file__).parent
NAME = "qwen_magic"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name a ``from ... import`` names, as Python resolves it."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Every package module and the package modules it imports, wherever the import sits."""
    modules = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module)
                # ``from . import _media`` imports a submodule; ``from . import x`` a name.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
                ]
            for target in targets:
                if target == NAME or target.startswith(NAME + "."):
                    found = known(target)
                    if found is not None and found != name:
                        graph[name].add(found)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle in ``graph`` as the list of its modules (first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / NAME
    pkg.mkdir()
    (pkg / "__init__.py").write_text("def f():\n    from ._a import x\n")
    (pkg / "_a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._b import y\n")
    (pkg / "_b.py").write_text("import qwen_magic._c\n")
    (pkg / "_c.py").write_text("def g():\n    from . import _a\n")
    graph = import_graph(pkg)
    assert graph == {
        NAME: {f"{NAME}._a"},
        f"{NAME}._a": {f"{NAME}._b"},
        f"{NAME}._b": {f"{NAME}._c"},
        f"{NAME}._c": {f"{NAME}._a"},
    }
    assert find_cycle(graph) == [f"{NAME}._a", f"{NAME}._b", f"{NAME}._c", f"{NAME}._a"]
    (pkg / "_c.py").write_text("import json\n")
    assert find_cycle(import_graph(pkg)) is None


def test_the_graph_resolves_relative_imports_inside_a_subpackage(tmp_path: Path) -> None:
    pkg = tmp_path / NAME
    (pkg / "_sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "_a.py").write_text("from ._sub import f\n")
    (pkg / "_sub" / "__init__.py").write_text("from ._x import f\nfrom . import _y\n")
    (pkg / "_sub" / "_x.py").write_text("from .._b import g\n\ndef f():\n    from ._y import h\n")
    (pkg / "_sub" / "_y.py").write_text("from .. import _b\n")
    (pkg / "_b.py").write_text("")
    sub = f"{NAME}._sub"
    assert import_graph(pkg) == {
        NAME: set(),
        f"{NAME}._a": {sub},
        f"{NAME}._b": set(),
        sub: {f"{sub}._x", f"{sub}._y"},
        f"{sub}._x": {f"{NAME}._b", f"{sub}._y"},
        f"{sub}._y": {f"{NAME}._b"},
    }
    # A module of the subpackage importing from the subpackage itself closes a circle.
    (pkg / "_sub" / "_y.py").write_text("from . import f\n")
    assert find_cycle(import_graph(pkg)) == [sub, f"{sub}._x", f"{sub}._y", sub]


def test_the_package_has_no_import_circle() -> None:
    graph = import_graph()
    assert len(graph) > 10
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " → ".join(cycle or [])
