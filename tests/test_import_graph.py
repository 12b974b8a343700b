"""The package's import graph, lazy imports included, has no cycle that crosses packages and
none at all inside ``backends/``.

Edges come from every ``import`` statement in a module's source, at any depth (a function's
lazy import counts: it runs the same module code, only later), relative imports resolved.
Only imports under ``if TYPE_CHECKING`` are left out, since they never run. Importing
``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, so those are edges too.

A *package* here is the first name under ``djl_python`` (``config``, ``artifacts``,
``backends``, ``engine``, ``api``, ``serving``, ``djl``, or a top-level module).
"""

from __future__ import annotations

import ast
from pathlib import Path

import djl_python

ROOT = Path(djl_python.__file__).parent
PACKAGE = "djl_python"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def with_parents(name: str) -> list[str]:
    """``name`` and every package above it that is ours (each runs on import)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts) + 1) if ".".join(parts[:i]) in MODULES]


def targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules of ours that ``node`` (in ``module``) runs."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package(module) else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        names = [base] + [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
    found: list[str] = []
    for name in names:
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            while name not in MODULES and "." in name:  # ``import a.b.func`` is not a thing; be lenient
                name = name.rsplit(".", 1)[0]
            found += with_parents(name)
    return found


def edges(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for n in ast.walk(node) if n is not node.test)
            typing_only.difference_update(id(n) for orelse in node.orelse for n in ast.walk(orelse))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in typing_only:
            out.update(t for t in targets(module, node) if t != module)
    return out


GRAPH: dict[str, set[str]] = {m: edges(m) for m in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
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


def package_of(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_no_cycle_crosses_packages() -> None:
    crossing = [c for c in cycles(GRAPH) if len({package_of(m) for m in c}) > 1]
    assert not crossing, f"import cycles across packages: {crossing}"


def test_no_cycle_inside_backends() -> None:
    inside = [c for c in cycles(GRAPH) if any(package_of(m) == "backends" for m in c)]
    assert not inside, f"import cycles in backends/: {inside}"


def test_the_backend_base_knows_no_backend() -> None:
    """The contract and the dispatch's shared parts import no backend; each backend imports neither
    the other nor a CLI."""
    assert not {m for m in GRAPH["djl_python.backends.base"] if m.startswith("djl_python.backends.")}
    for module, targets_ in GRAPH.items():
        if module.startswith("djl_python.backends.neuron"):
            assert not {t for t in targets_ if t.startswith("djl_python.backends.pytorch")}, module
            assert "djl_python.partition" not in targets_, module
        if module.startswith("djl_python.backends.pytorch"):
            assert not {t for t in targets_ if t.startswith("djl_python.backends.neuron")}, module


def test_the_walker_finds_lazy_and_relative_imports_and_cycles() -> None:
    """The graph sees what it must (so a passing test means something)."""
    assert "djl_python.backends.neuron.load" in GRAPH["djl_python.backends.dispatch"]  # a lazy import
    assert "djl_python.backends.neuron" in GRAPH["djl_python.backends.dispatch"]  # a parent package
    assert "djl_python.config.errors" in GRAPH["djl_python.config"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
