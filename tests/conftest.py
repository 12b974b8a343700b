"""Shared fixtures: tiny models are built once per session, per architecture."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach the hub; two cores are shared by the whole suite.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.models import ARCHS, make_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory: pytest.TempPathFactory):
    """Return ``build(arch) -> Path``, caching one folder per architecture. With
    ``DJL_TEST_TINY_MODELS_DIR`` set (the mutation run's many short sessions), the folders are
    kept there and reused across sessions; the tests only read them."""
    cache: dict[str, Path] = {}
    keep = os.environ.get("DJL_TEST_TINY_MODELS_DIR")

    def build(arch: str) -> Path:
        if arch not in cache:
            if keep and (Path(keep) / arch / "config.json").exists():
                cache[arch] = Path(keep) / arch
            elif keep:
                cache[arch] = make_tiny_model(arch, Path(keep) / arch)
            else:
                cache[arch] = make_tiny_model(arch, tmp_path_factory.mktemp(f"tiny-{arch}"))
        return cache[arch]

    return build


@pytest.fixture(scope="session")
def tiny_llama(tiny_model_factory) -> Path:
    return tiny_model_factory("llama")


@pytest.fixture(scope="session")
def tiny_llama_512(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama with 512 positions: room for the longest output any structured-output test allows."""
    from tests.models import make_tiny_model

    return make_tiny_model("llama", tmp_path_factory.mktemp("tiny-512") / "llama", max_positions=512)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real default model, prepared by ``make test`` before pytest starts."""
    from djl_python.default_model import default_model_dir

    return default_model_dir()


__all__ = ["ARCHS"]
