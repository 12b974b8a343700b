"""API-layer test fixtures: the tiny byte-level BPE tokenizer, built once."""

from __future__ import annotations

import pytest

from tests.models import make_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return make_tokenizer(tmp_path_factory.mktemp("tiny-tokenizer"))
