"""One tiny-model ``djl-serve`` subprocess shared by the HTTP route tests, and its offline oracle."""

from __future__ import annotations

import pytest

from djl_python.config import load_config
from djl_python.engine.request import SamplingParams
from djl_python.loader import load_engine
from tests.serving.http_server import model_folder, start_server

SERVER_OPTIONS = {"device": "cpu", "max_rolling_batch_size": 4, "n_positions": 128, "max_waiting_requests": 8}


@pytest.fixture(scope="session")
def model_dir(tiny_llama, tmp_path_factory):
    """A tiny llama folder with a ``serving.properties`` holding ``SERVER_OPTIONS``."""
    return model_folder(tiny_llama, tmp_path_factory.mktemp("http") / "tiny", SERVER_OPTIONS)


@pytest.fixture(scope="session")
def server(model_dir, tmp_path_factory):
    """``djl-serve`` on 127.0.0.1 for that folder. Tests that read metrics compare before/after deltas."""
    srv = start_server(model_dir, tmp_path_factory.mktemp("logs") / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def offline(model_dir):
    """The same model in-process: ``offline(prompt, n, **params) -> GenerationResult`` (greedy)."""
    engine = load_engine(load_config(model_dir, env={}))

    def run(prompt: str, n: int, **kw):
        return engine.generate([prompt], SamplingParams(max_new_tokens=n, **kw))[0]

    run.tokenizer = engine.tokenizer
    return run
