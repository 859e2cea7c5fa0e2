"""Imports point one way: no cycle between boltzclf modules, and importing a module has no side effects
on the energy-backend registry (issue 13, item 7)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import boltzclf

PACKAGE = Path(boltzclf.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the boltzclf modules it imports anywhere in its source (function-level imports too)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_boltzclf_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 100  # the whole package was read
    assert cycles(graph) == []


def _fresh_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_collective_variables_do_not_import_the_force_field():
    loaded = _fresh_python("import sys, boltzclf.openmm.cvs\n"
                           "print(sorted(m for m in sys.modules if m.startswith('boltzclf.forcefield')))")
    assert loaded.strip() == "[]"


def test_importing_every_module_registers_nothing():
    code = ("import importlib, pkgutil, boltzclf\n"
            "from boltzclf.energy import bridge\n"
            "before = dict(bridge._BACKENDS)\n"
            "for m in pkgutil.walk_packages(boltzclf.__path__, 'boltzclf.'):\n"
            "    if not m.name.endswith('__main__'):\n"
            "        importlib.import_module(m.name)\n"
            "print(before == bridge._BACKENDS, all(isinstance(f, str) for f in bridge._BACKENDS.values()))")
    assert _fresh_python(code).split() == ["True", "True"]
