"""A model failure in the middle of a stream: reported in-band by every API, and the server recovers.

In-process (Starlette's TestClient runs the real app and its lifespan) around a real tiny engine
whose ``step`` can be armed to raise after a number of successful steps.
"""

from __future__ import annotations

import json

import pytest

from djl_python.config import load_config
from tests.serving.http_server import client_with_engine, metric_value


class FailingEngine:
    """The real engine; ``arm(n)`` makes the step after ``n`` more successful ones raise."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self._countdown = None

    def arm(self, steps: int) -> None:
        self._countdown = steps

    def step(self):
        if self._countdown is not None:
            if self._countdown == 0:
                self._countdown = None
                raise RuntimeError("injected device failure")
            self._countdown -= 1
        return self._engine.step()

    def __getattr__(self, name):
        return getattr(self._engine, name)


@pytest.fixture(scope="module")
def app_and_engine(tiny_llama):
    config = load_config(tiny_llama, properties={"device": "cpu", "max_rolling_batch_size": "2",
                                                 "n_positions": "128"}, env={})
    with client_with_engine(config, FailingEngine) as (client, engine):
        yield client, engine


LONG_LMI = {"inputs": "Hello", "parameters": {"max_new_tokens": 50, "ignore_eos": True}, "stream": True}


def events(resp) -> list[dict]:
    return [json.loads(line[len("data: "):]) for line in resp.iter_lines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def test_openai_stream_reports_the_failure_as_an_error_event(app_and_engine):
    client, engine = app_and_engine
    engine.arm(2)
    with client.stream("POST", "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 50, "ignore_eos": True,
            "temperature": 0, "stream": True}) as resp:
        got = events(resp)
    assert resp.status_code == 200
    assert "injected device failure" in got[-1]["error"]["message"]
    assert len([e for e in got if "choices" in e]) >= 1


def test_tgi_stream_reports_the_failure_as_an_error_event(app_and_engine):
    client, engine = app_and_engine
    engine.arm(2)
    with client.stream("POST", "/generate_stream", json={"inputs": "Hello", "parameters": {"max_new_tokens": 50}}) \
            as resp:
        got = events(resp)
    assert got[-1]["error_type"] == "generation" and "injected device failure" in got[-1]["error"]
    assert all("token" in e for e in got[:-1])


def test_lmi_stream_ends_with_finish_reason_error(app_and_engine):
    client, engine = app_and_engine
    engine.arm(2)
    with client.stream("POST", "/invocations", json=LONG_LMI) as resp:
        lines = [json.loads(line) for line in resp.iter_lines() if line]
    assert lines[-1]["details"]["finish_reason"] == "error"
    assert "injected device failure" in lines[-1]["details"]["error"]


def test_non_streaming_failure_is_500_and_the_next_request_succeeds(app_and_engine):
    client, engine = app_and_engine
    before = client.get("/metrics").text
    engine.arm(1)
    failed = client.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 20, "ignore_eos": True})
    assert failed.status_code == 500 and "injected device failure" in failed.json()["error"]["message"]
    ok = client.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 3, "ignore_eos": True})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
    after = client.get("/metrics").text
    assert metric_value(after, "djl_request_finished_total", finish_reason="error") == \
        metric_value(before, "djl_request_finished_total", finish_reason="error") + 1
