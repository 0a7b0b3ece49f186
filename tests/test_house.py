"""The shape of the package: imports point one way, modules stay readable, facts live once."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edge_yolo"
#: the training loop reads top to bottom on purpose; everything else splits by job
LONG_ON_PURPOSE: set[str] = set()  # none: split a module by job instead


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module(f) for f in files}
    graph: dict[str, set[str]] = {}
    for f in files:
        me = _module(f)
        package = me if f.name == "__init__.py" else me.rsplit(".", 1)[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):  # function-level ones too
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            for name in names:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                # importing a parent package (its __init__) is not a cycle back into it
                if name and name != me and not me.startswith(name + "."):
                    targets.add(name)
        graph[me] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_package():
    graph = _import_graph()
    assert len(graph) > 50 and "edge_yolo.runtime.bundle" in graph
    assert _cycles(graph) == []


def test_the_runtime_imports_nothing_of_the_host_side():
    graph = _import_graph()
    host = ("edge_yolo.train", "edge_yolo.export", "edge_yolo.quant", "edge_yolo.models")
    for module, targets in graph.items():
        if module.startswith("edge_yolo.runtime") and module != "edge_yolo.runtime.backends.torch":
            assert not [t for t in targets if t.startswith(host)], module


@pytest.mark.parametrize("leaf", ["contract", "errors", "console", "callable_module",
                                  "runtime.tflite_file", "runtime.onnx_file", "runtime.cpu"])
def test_leaf_modules_need_only_the_standard_library(leaf):
    tree = ast.parse((PACKAGE / (leaf.replace(".", "/") + ".py")).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    assert imported <= set(sys.stdlib_module_names), imported


def test_no_module_over_500_lines():
    long = {
        str(f.relative_to(PACKAGE)): n
        for f in PACKAGE.rglob("*.py")
        if (n := len(f.read_text().splitlines())) > 500
    }
    assert set(long) <= LONG_ON_PURPOSE, long
