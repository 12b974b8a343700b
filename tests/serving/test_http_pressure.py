"""Back-pressure and disconnects against a real ``djl-serve`` with ONE slot and ONE waiting place.

Long requests (4000 tokens, EOS ignored, on a tiny model with a 4096-token window) hold the slot
far longer than any test step takes, so nothing races a request finishing on its own: each one
ends when its client goes away. What the server did is read back from ``/metrics`` (running and
waiting gauges, abort counter, per-route status codes).
"""

from __future__ import annotations

import json
import socket
import threading
from urllib.parse import urlparse

import httpx
import pytest

from tests.serving.http_server import idle, metric_value, metrics, start_tiny_server, wait_for

WINDOW = 4096
OPTIONS = {"device": "cpu", "max_rolling_batch_size": 1, "n_positions": WINDOW, "max_waiting_requests": 1}
LONG_TOKENS = 4000
LONG = {"inputs": "Hello", "parameters": {"max_new_tokens": LONG_TOKENS, "ignore_eos": True}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_tiny_server(tmp_path_factory, "pressure", OPTIONS, WINDOW)
    yield srv
    srv.stop()


def aborts(text: str) -> float:
    return metric_value(text, "djl_request_finished_total", finish_reason="abort")


def test_full_queue_is_503_with_retry_after_and_the_waiting_request_still_runs(server):
    wait_for(server, idle)
    with httpx.stream("POST", f"{server.url}/invocations", json={**LONG, "stream": True}, timeout=60) as running:
        lines = running.iter_lines()  # kept alive: dropping the iterator would close the response
        assert json.loads(next(lines))["token"]["id"] >= 0  # it holds the only slot
        waiting: dict = {}
        thread = threading.Thread(target=lambda: waiting.update(resp=httpx.post(
            f"{server.url}/invocations", json={"inputs": "Hi", "parameters": {"max_new_tokens": 3}}, timeout=120)))
        thread.start()
        wait_for(server, lambda t: metric_value(t, "djl_num_requests_waiting") == 1)
        refused = httpx.post(f"{server.url}/v1/completions", json={"model": "tiny", "prompt": "Hi", "max_tokens": 2})
        tgi_refused = httpx.post(f"{server.url}/generate", json={"inputs": "Hi"})
    # Leaving the block disconnected the streaming client: its slot goes to the waiting request.
    thread.join(120)
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    assert "max_waiting_requests" in refused.json()["error"]["message"]
    assert tgi_refused.status_code == 503 and tgi_refused.json()["error_type"] == "overloaded"
    assert waiting["resp"].status_code == 200 and waiting["resp"].json()["generated_text"] is not None


def test_streaming_disconnect_frees_the_slot(server):
    before = wait_for(server, idle)
    with httpx.stream("POST", f"{server.url}/invocations", json={**LONG, "stream": True}, timeout=60) as resp:
        lines = resp.iter_lines()
        next(lines)
        assert metric_value(metrics(server), "djl_num_requests_running") == 1
    after = wait_for(server, lambda t: idle(t) and aborts(t) == aborts(before) + 1)
    assert metric_value(after, "djl_http_requests_total", route="/invocations", code="499") == \
        metric_value(before, "djl_http_requests_total", route="/invocations", code="499") + 1
    follow_up = httpx.post(f"{server.url}/invocations", json={"inputs": "Hi", "parameters": {"max_new_tokens": 2}},
                           timeout=60)
    assert follow_up.status_code == 200


@pytest.mark.parametrize("route,body", [
    ("/invocations", LONG),
    ("/v1/completions", {"model": "tiny", "prompt": "Hello", "max_tokens": LONG_TOKENS, "ignore_eos": True}),
])
def test_non_streaming_disconnect_frees_the_slot(server, route, body):
    before = wait_for(server, idle)
    url = urlparse(server.url)
    payload = json.dumps(body).encode()
    with socket.create_connection((url.hostname, url.port)) as raw:
        raw.sendall(
            f"POST {route} HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload
        )
        wait_for(server, lambda t: metric_value(t, "djl_num_requests_running") == 1)
    # The socket is closed: the server must notice although it is not writing to it.
    after = wait_for(server, lambda t: idle(t) and aborts(t) == aborts(before) + 1)
    assert metric_value(after, "djl_http_requests_total", route=route, code="499") == \
        metric_value(before, "djl_http_requests_total", route=route, code="499") + 1
