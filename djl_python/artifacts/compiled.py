"""Recognising a folder of compiled Neuron graphs.

Two shapes exist:

* ``NEFF_FILES``: what transformers-neuronx ``save(dir)`` writes (and what
  optimum-neuron puts in ``compiled/``): ``<hash>.neff`` files at the top level.
* ``NEFF_CACHE``: a dump of the Neuron persistent compile cache
  (``NEURON_COMPILE_CACHE_URL``): ``neuronxcc-<version>/MODULE_<hash>/model.neff``.

An existing folder with neither is ``EMPTY``: a compile cache that compilation
will fill. The bytes of a ``.neff`` are never read here; the Neuron runtime
matches them by HLO hash at load time.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from djl_python.artifacts.errors import ArtifactError

NEFF_SUFFIX = ".neff"


class CompiledFormat(str, Enum):
    """How compiled graphs are laid out in a folder."""

    NEFF_FILES = "neff_files"
    NEFF_CACHE = "neff_cache"
    EMPTY = "empty"


def detect_compiled(folder: Path) -> CompiledFormat:
    """Classify ``folder`` (which must be a directory)."""
    if not folder.is_dir():
        raise ArtifactError(f"compiled graph folder {folder} does not exist or is not a folder")
    if any(folder.glob(f"*{NEFF_SUFFIX}")):
        return CompiledFormat.NEFF_FILES
    if any(folder.glob(f"neuronxcc-*/MODULE_*/*{NEFF_SUFFIX}")) or any(folder.rglob(f"MODULE_*/*{NEFF_SUFFIX}")):
        return CompiledFormat.NEFF_CACHE
    return CompiledFormat.EMPTY


def require_graphs(folder: Path, what: str) -> CompiledFormat:
    """Like ``detect_compiled`` but an empty folder is an error naming ``what`` it is."""
    found = detect_compiled(folder)
    if found is CompiledFormat.EMPTY:
        present = sorted(p.name for p in folder.iterdir())[:5]
        raise ArtifactError(
            f"{what} {folder} holds no compiled graphs (found: {present or 'nothing'}); expected *.neff files "
            "or a neff cache dump (neuronxcc-*/MODULE_*/model.neff)"
        )
    return found
