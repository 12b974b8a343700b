"""Shutdown fits SageMaker's window: SIGKILL comes 30 s after SIGTERM.

Each test starts its own real ``djl-serve`` with the default ``--shutdown-grace``: a stream
that outlives the drain ends with an in-band 503 error and a clean end of body, a non-streaming
request cut by the drain gets 503 (not 500), and the process exits 0 in under 30 s; a SIGTERM
while the model is still loading (its download hangs on an S3 endpoint that never answers)
exits 0 at once, with no traceback.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import httpx
import pytest

from djl_python.serving.cli import SHUTDOWN_GRACE
from tests.serving.http_server import model_folder, start_server, wait_for

SAGEMAKER_KILL_AFTER = 30.0
WINDOW = 32768  # a generation this long outlives the drain on any CPU this runs on
OPTIONS = {"device": "cpu", "max_rolling_batch_size": 2, "n_positions": WINDOW}


@pytest.fixture()
def slow_server(tmp_path_factory):
    """A tiny model with a window long enough for a generation that outlives the drain."""
    from tests.models import make_tiny_model

    model = make_tiny_model("llama", tmp_path_factory.mktemp("shutdown-model") / "tiny", max_positions=WINDOW)
    folder = model_folder(model, tmp_path_factory.mktemp("shutdown") / "tiny", OPTIONS)
    srv = start_server(folder, tmp_path_factory.mktemp("logs") / "shutdown.log")
    yield srv
    srv.stop()


def _running(server) -> bool:
    return wait_for(server, lambda t: "djl_num_requests_running 2.0" in t, timeout=60) is not None


def test_sigterm_during_long_requests_ends_them_as_unavailable_within_sagemakers_window(slow_server):
    assert SHUTDOWN_GRACE < SAGEMAKER_KILL_AFTER - 5
    long = WINDOW - 64
    stream_body = {"inputs": "Count:", "stream": True, "parameters": {"max_new_tokens": long, "ignore_eos": True}}
    whole: dict[str, httpx.Response] = {}

    def non_streaming() -> None:
        whole["response"] = httpx.post(f"{slow_server.url}/invocations", timeout=120, json={
            "inputs": "Count:", "parameters": {"max_new_tokens": long, "ignore_eos": True}})

    cut = threading.Thread(target=non_streaming)
    with httpx.stream("POST", f"{slow_server.url}/invocations", json=stream_body, timeout=120) as running:
        lines = running.iter_lines()
        first = json.loads(next(lines))
        cut.start()
        _running(slow_server)
        signalled = time.monotonic()
        slow_server.proc.send_signal(signal.SIGTERM)
        rest = [json.loads(line) for line in lines if line]  # ends cleanly: no protocol error raised
    exit_code = slow_server.proc.wait(SAGEMAKER_KILL_AFTER + 30)
    elapsed = time.monotonic() - signalled
    cut.join(60)
    assert exit_code == 0 and elapsed < SAGEMAKER_KILL_AFTER, elapsed
    assert "token" in first and len(rest) < long, "the stream was not cut: make it longer"
    assert "shutting down" in json.dumps(rest[-1]), rest[-1]  # the in-band error closes the stream
    assert whole["response"].status_code == 503 and "shutting down" in whole["response"].text
    assert "Traceback" not in slow_server.logs()


def test_sigterm_while_loading_exits_at_once_without_a_traceback(tiny_llama, tmp_path):
    hang = socket.socket()  # an S3 endpoint that accepts connections and never answers
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)
    folder = tmp_path / "from-s3"
    folder.mkdir()
    (folder / "serving.properties").write_text("option.model_id=s3://bucket/model\noption.device=cpu\n")
    env = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{hang.getsockname()[1]}", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
    server = start_server(folder, tmp_path / "loading.log", wait=False, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.proc.poll() is None, server.logs()
            try:
                ping = httpx.get(f"{server.url}/ping", timeout=2)
                if ping.status_code == 503 and "loading" in ping.text:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, server.logs()
            time.sleep(0.1)
        hang.accept()  # the download has begun and waits on this endpoint
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        assert time.monotonic() - signalled < 10
        logs = server.logs()
        assert "Traceback" not in logs and "internal error" not in logs, logs
        assert "stopped before the model finished loading" in logs
    finally:
        server.stop()
        hang.close()
