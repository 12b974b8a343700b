"""Layer boundaries, checked on the source: transport -> api -> engine -> backend.

* nothing under ``engine/`` imports ``serving``, ``api``, a transport (the DJL
  worker modules, ``transformers_neuronx``) or a web framework; ``backends`` only
  for type annotations (``TYPE_CHECKING``);
* nothing under ``api/`` imports FastAPI, Starlette, uvicorn, torch, ``serving``
  or a DJL transport module;
* the DJL worker does not import the HTTP package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import djl_python

ROOT = Path(djl_python.__file__).parent
TRANSPORTS = ("djl_python.serving", "djl_python.transformers_neuronx", "djl_python.worker",
              "djl_python.inputs", "djl_python.outputs", "djl_python.framing", "djl_python.pair_list",
              "fastapi", "starlette", "uvicorn")


def imports(path: Path) -> list[tuple[str, bool]]:
    """Every imported module of ``path`` and whether it is under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in typing_only) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) in typing_only))
    return found


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules("engine"), ids=lambda p: p.name)
def test_the_engine_knows_no_api_and_no_transport(path):
    for module, typing_only in imports(path):
        assert not under(module, ("djl_python.api",) + TRANSPORTS), f"{path.name} imports {module}"
        if under(module, ("djl_python.backends",)):
            assert typing_only, f"{path.name} imports {module} at run time"


@pytest.mark.parametrize("path", modules("api"), ids=lambda p: p.name)
def test_the_api_layer_knows_no_transport(path):
    for module, _ in imports(path):
        assert not under(module, TRANSPORTS + ("torch", "djl_python.backends")), f"{path.name} imports {module}"


def test_the_djl_worker_does_not_import_the_http_package():
    for name in ("worker.py", "transformers_neuronx.py"):
        for module, _ in imports(ROOT / name):
            assert not under(module, ("djl_python.serving", "fastapi", "starlette")), f"{name} imports {module}"


def test_the_checks_see_imports():
    """The walker finds what it must refuse (so a passing test means something)."""
    found = dict(imports(ROOT / "serving" / "http_common.py"))
    assert "fastapi" in found and "djl_python.api.errors" in found
    assert ("djl_python.backends.base", True) in imports(ROOT / "engine" / "engine.py")
