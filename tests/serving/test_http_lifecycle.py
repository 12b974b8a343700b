"""Server life cycle: readiness while loading, a failed load, the default model, SIGTERM draining."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from djl_python.config import load_config
from djl_python.serving.app import create_app
from tests.serving.http_server import slow_loading_client, start_server, wait_ready


def test_ping_is_503_while_loading_then_200(tiny_llama):
    with slow_loading_client(tiny_llama) as (client, release):
        loading = client.get("/ping")
        assert loading.status_code == 503 and "loading" in loading.json()["message"]
        refused = client.post("/v1/completions", json={"prompt": "Hi"})
        assert refused.status_code == 503 and "retry-after" in refused.headers
        release.set()
        deadline = time.monotonic() + 60
        while client.get("/ping").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200


@pytest.fixture(scope="module")
def default_server(smollm2_dir, tmp_path_factory):
    """No model in the folder: djl-serve must serve the embedded default model."""
    folder = tmp_path_factory.mktemp("default")
    (folder / "serving.properties").write_text(
        "option.device=cpu\noption.max_rolling_batch_size=2\noption.n_positions=512\n")
    srv = start_server(folder, tmp_path_factory.mktemp("logs") / "default.log", extra_args=("--shutdown-grace", "60"))
    yield srv
    srv.stop()


def test_serves_the_default_model_when_none_is_configured(default_server, smollm2_dir):
    client = openai.OpenAI(base_url=f"{default_server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == [smollm2_dir.name]
    resp = client.chat.completions.create(model=smollm2_dir.name, max_tokens=8, temperature=0,
                                          messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert resp.choices[0].message.content.strip() and resp.usage.completion_tokens <= 8
    assert "device=cpu" in default_server.logs() and "backend=pytorch" in default_server.logs()


def test_readme_curl_example_answers_paris(default_server):
    """The README's curl example, body taken from the README itself, so the two cannot drift."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    body = json.loads(re.search(r"-d '(\{.*?\})'", readme, re.S).group(1))
    resp = httpx.post(f"{default_server.url}/invocations", json=body, timeout=120)
    assert resp.status_code == 200
    assert resp.json()["object"] == "chat.completion"
    assert "Paris" in resp.json()["choices"][0]["message"]["content"]


def test_readme_client_examples_run_as_written(default_server, capsys):
    """The README's openai SDK example (executed, its URL pointed at this server) and its
    /generate_stream curl body, both taken from the README itself."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert "http://127.0.0.1:8080/v1" in code
    exec(compile(code.replace("http://127.0.0.1:8080", default_server.url), "README.md", "exec"), {})
    assert "Paris" in capsys.readouterr().out
    curl = re.search(r"curl -sN (\S+/generate_stream) .*?-d '(\{.*?\})'", readme, re.S)
    assert curl.group(1) == "http://127.0.0.1:8080/generate_stream"
    with httpx.stream("POST", f"{default_server.url}/generate_stream", json=json.loads(curl.group(2)),
                      timeout=120) as resp:
        events = [json.loads(line[len("data:"):]) for line in resp.iter_lines() if line.startswith("data:")]
    assert resp.status_code == 200 and len(events) == 8 and events[-1]["generated_text"]


def test_sigterm_refuses_new_requests_and_finishes_running_ones(default_server):
    body = {"inputs": "Count to one hundred:", "parameters": {"max_new_tokens": 120, "ignore_eos": True},
            "stream": True}
    with httpx.stream("POST", f"{default_server.url}/invocations", json=body, timeout=300) as running:
        lines = running.iter_lines()
        first = json.loads(next(lines))
        default_server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while httpx.get(f"{default_server.url}/ping").status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        refused = httpx.post(f"{default_server.url}/invocations", json={"inputs": "Hi"})
        rest = [json.loads(line) for line in lines if line]
    assert refused.status_code == 503 and "shutting down" in refused.json()["message"]
    tokens = [first] + rest
    assert len(tokens) == 120 and rest[-1]["generated_text"]
    assert "details" not in rest[-1]  # no error details: it finished normally
    assert default_server.proc.wait(60) == 0


def test_wait_ready_reports_a_crashed_server(tmp_path):
    folder = tmp_path / "bad-config"
    folder.mkdir()
    (folder / "serving.properties").write_text("option.max_rolling_batch_size=zero\n")
    server = start_server(folder, tmp_path / "bad.log", wait=False)
    with pytest.raises(RuntimeError, match="exited with 2"):
        wait_ready(server, timeout=60)


def test_a_permanent_load_failure_is_not_reported_as_overloaded(tiny_llama):
    """A client that reaches a server whose model failed to load gets 503 with the
    reason, no Retry-After (retrying cannot help) and never the "overloaded" type of a full queue."""
    config = load_config(tiny_llama, properties={"device": "cpu", "n_positions": "64"}, env={})

    def broken(cfg):
        raise ValueError("config.json is not a model")

    with TestClient(create_app(config, broken)) as client:
        deadline = time.monotonic() + 30
        while "failed" not in client.get("/ping").json().get("message", ""):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for route, body, kind in [("/v1/completions", {"prompt": "Hi"}, lambda r: r.json()["error"]["type"]),
                                  ("/generate", {"inputs": "Hi"}, lambda r: r.json()["error_type"]),
                                  ("/invocations", {"inputs": "Hi"}, lambda r: r.json()["type"])]:
            resp = client.post(route, json=body)
            assert resp.status_code == 503 and "retry-after" not in resp.headers, (route, resp.headers)
            assert kind(resp) == "unavailable" and "failed to load" in resp.text and "not a model" in resp.text

