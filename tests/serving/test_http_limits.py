"""Request limits against a real ``djl-serve``.

* body size: ``option.max_request_bytes`` -> 413 naming the limit, from ``Content-Length`` and
  while a chunked body arrives, before any parsing;
* prompt length: a prompt with more characters than ``n_positions`` tokens can hold is refused
  (400 naming the prompt field) without being tokenised; parsing and tokenising run off the
  event loop;
* slow readers: a streaming client that stops reading is aborted once
  ``option.max_unsent_tokens`` tokens wait unsent beyond the stream's bounded buffers, or once
  its writes stay blocked for ``option.stream_stall_timeout`` seconds, long before
  ``predict_timeout``, however few bytes each token takes;
* a body over the limit and a prompt of several MB, sent while a stream runs, stop neither the
  stream's tokens nor ``/ping`` (how much they delay them: ``python -m bench.hostile``).
"""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest

from bench.hostile import flood, measure, oversized_and_long_prompt
from djl_python.serving.refusals import BURST, SHARE
from tests.serving.http_server import idle, metric_value, metrics, start_tiny_server, wait_for

WINDOW = 2048
LIMIT = 5 * 1024 * 1024  # option.max_request_bytes: room for a several-MB prompt below it
UNSENT = 16  # option.max_unsent_tokens
OPTIONS = {"device": "cpu", "max_rolling_batch_size": 2, "n_positions": WINDOW, "max_waiting_requests": 4,
           "max_request_bytes": LIMIT, "max_unsent_tokens": UNSENT, "predict_timeout": 600}
ROUTES = {
    "/invocations": lambda prompt: {"inputs": prompt, "parameters": {"max_new_tokens": 2}},
    "/v1/completions": lambda prompt: {"prompt": prompt, "max_tokens": 2},
    "/v1/chat/completions": lambda prompt: {"messages": [{"role": "user", "content": prompt}], "max_tokens": 2},
    "/generate": lambda prompt: {"inputs": prompt, "parameters": {"max_new_tokens": 2}},
}
PROMPT_FIELD = {"/invocations": "inputs", "/v1/completions": "prompt", "/v1/chat/completions": "messages",
                "/generate": "inputs"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_tiny_server(tmp_path_factory, "limits", OPTIONS, WINDOW)
    yield srv
    srv.stop()


def oversized(route: str) -> bytes:
    return json.dumps(ROUTES[route]("x" * (LIMIT + 10))).encode()


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_body_over_the_limit_is_413_naming_the_limit(server, route):
    resp = httpx.post(server.url + route, content=oversized(route), headers={"content-type": "application/json"},
                      timeout=60)
    assert resp.status_code == 413, resp.text
    assert str(LIMIT) in resp.text and "max_request_bytes" in resp.text


def test_a_chunked_body_over_the_limit_is_413_while_it_arrives(server):
    sent = []

    def chunks():
        for _ in range(64):  # 64 x 128 KiB = 8 MiB, never declared
            sent.append(1)
            yield b" " * (128 * 1024)

    try:
        resp = httpx.post(server.url + "/invocations", content=chunks(), headers={"content-type": "application/json"},
                          timeout=60)
    except httpx.HTTPError:  # the server may answer and close before the client has sent everything
        resp = None
    if resp is not None:
        assert resp.status_code == 413 and "max_request_bytes" in resp.text, resp.text
    assert len(sent) < 64 or resp is not None


def test_a_body_at_the_limit_is_read(server):
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": 2}}
    raw = json.dumps(body).encode()
    raw = raw[:-1] + b" " * (LIMIT - len(raw)) + b"}"  # exactly LIMIT bytes of valid JSON
    assert len(raw) == LIMIT
    resp = httpx.post(server.url + "/invocations", content=raw, headers={"content-type": "application/json"},
                      timeout=60)
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_prompt_longer_than_the_window_can_hold_is_400_without_tokenising(server, route):
    prompt = "hello world " * 300_000  # 3.6 MB: far more characters than WINDOW tokens can hold
    resp = httpx.post(server.url + route, json=ROUTES[route](prompt), timeout=60)
    assert resp.status_code == 400, resp.text
    # Refused by its character count ("characters" in the message), which needs no tokenising.
    assert PROMPT_FIELD[route] in resp.text and "characters" in resp.text, resp.text


def test_a_prompt_of_too_many_tokens_but_few_characters_is_still_400(server):
    """Under the character bound, the engine counts tokens: the prompt field is named."""
    resp = httpx.post(server.url + "/v1/completions", json={"prompt": "a b " * WINDOW, "max_tokens": 2}, timeout=60)
    assert resp.status_code == 400 and "prompt" in resp.text and "tokens" in resp.text, resp.text


def _never_reading_stream(server, body: dict, hold_open_until=None) -> tuple[float, float]:
    """Send a streaming chat request on a socket that never reads; once the request has ended,
    return (aborts counted for it: 0 or 1, tokens generated for it). ``hold_open_until``: a condition
    the socket stays open (and unread) for, up to 30 s, before it is closed."""
    before = wait_for(server, idle)
    url = urlparse(server.url)
    raw_body = json.dumps(body).encode()
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's writes block
    raw.connect((url.hostname, url.port))
    try:
        raw.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.hostname}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(raw_body)}\r\n\r\n".encode() + raw_body)
        aborts = metric_value(before, "djl_request_finished_total", finish_reason="abort")
        after = wait_for(server, lambda t: idle(t) and (
            metric_value(t, "djl_request_finished_total", finish_reason="abort") == aborts + 1
            or metric_value(t, "djl_request_finished_total", finish_reason="length")
            > metric_value(before, "djl_request_finished_total", finish_reason="length")), timeout=240)
        # the slot is free: another request is served at once
        assert httpx.post(f"{server.url}/invocations", json={"inputs": "Hi", "parameters": {"max_new_tokens": 2}},
                          timeout=60).status_code == 200
        deadline = time.monotonic() + 30
        while hold_open_until is not None and not hold_open_until() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        raw.close()
    return (metric_value(after, "djl_request_finished_total", finish_reason="abort") - aborts,
            metric_value(after, "djl_generation_tokens_total") - metric_value(before, "djl_generation_tokens_total"))


MAX_TOKENS = WINDOW - 48


def test_a_client_that_stops_reading_is_aborted_and_frees_its_slot(server):
    """Output of a few KB a token (20 top log-probs) fills the stream's buffers at once; then
    ``max_unsent_tokens`` tokens pile up and the request is aborted, long before its tokens (or
    predict_timeout) would end it."""
    aborted, generated = _never_reading_stream(server, {
        "messages": [{"role": "user", "content": "Hello"}], "stream": True, "max_tokens": MAX_TOKENS,
        "ignore_eos": True, "logprobs": True, "top_logprobs": 20})
    assert aborted == 1 and generated < MAX_TOKENS, generated


def test_a_client_that_stops_reading_small_tokens_is_aborted_too(server):
    """Plain chat chunks, about 200 bytes a token: the whole stream (about 400 KB) would fit in
    the buffers the kernel grows for a connection on its own, so the stream's send buffers must
    be bounded for the abort to come before the last token."""
    aborted, generated = _never_reading_stream(server, {
        "messages": [{"role": "user", "content": "Hello"}], "stream": True, "max_tokens": MAX_TOKENS,
        "ignore_eos": True})
    assert aborted == 1 and generated < MAX_TOKENS, generated


@pytest.fixture(scope="module")
def stall_server(tmp_path_factory):
    """Only the stall timeout can end a stream early here: ``max_unsent_tokens`` is out of reach."""
    options = {**OPTIONS, "max_unsent_tokens": 1_000_000, "stream_stall_timeout": 2}
    srv = start_tiny_server(tmp_path_factory, "stall", options, WINDOW)
    yield srv
    srv.stop()


def test_a_stream_whose_writes_stay_blocked_is_ended_after_stream_stall_timeout(stall_server):
    """The server ends the blocked stream after ``stream_stall_timeout``: an abort that frees the slot
    when generation is still running then; when the tiny model outran the timeout (an idle, fast
    machine), the request has finished by length and only the stalled connection is left to end. The
    client keeps its socket open (unread) until then: closing it would end the stream first."""
    aborted, generated = _never_reading_stream(stall_server, {
        "messages": [{"role": "user", "content": "Hello"}], "stream": True, "max_tokens": MAX_TOKENS,
        "ignore_eos": True}, hold_open_until=lambda: "stream_stall_timeout" in stall_server.logs())
    assert (aborted == 1 and generated < MAX_TOKENS) or (aborted == 0 and generated == MAX_TOKENS), generated
    assert "ending a stream whose client read nothing for 2s (stream_stall_timeout)" in stall_server.logs()


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    """The limits of ``server`` without its tight ``max_unsent_tokens``: the hostile client runs in
    the stream reader's process, and while it builds and sends bodies of several MB it holds the
    GIL long enough for the tiny model to get more than 16 tokens ahead of the reader, which
    ``server`` rightly aborts. These tests are about the bodies, not about slow readers."""
    srv = start_tiny_server(tmp_path_factory, "hostile", {**OPTIONS, "max_unsent_tokens": 1_000_000}, WINDOW)
    yield srv
    srv.stop()


def test_hostile_bodies_leave_a_running_stream_and_ping_going(hostile_server):
    """A body over the limit and a prompt of several MB arrive while a stream runs: both get
    their 4xx, the stream gets every token, every ping answers, and tokens keep arriving while
    the hostile bodies are handled (parsing and tokenising run off the event loop). How long
    the gaps and pings are is a figure, measured by
    ``python -m bench.hostile`` (docs/performance.md), not asserted on a shared machine."""
    server = hostile_server
    wait_for(server, idle)
    run = measure(server.url, oversized_and_long_prompt(server.url, LIMIT))
    assert run.statuses.get("long_prompt") == 400 and run.statuses.get("oversized") in (413, -1), run.statuses
    assert len(run.stamps) >= 600  # the stream ended normally, every token sent
    assert run.pings and all(latency != float("inf") for _, latency in run.pings)
    assert run.gaps_during(), "no token arrived while the hostile requests were handled"


def test_a_junk_flood_is_refused_within_its_budget_while_a_stream_runs(hostile_server):
    """One client loops bodies of a few MB holding about a million JSON values (each used to
    take seconds to refuse and stalled every stream). Every one is refused (400); the time spent
    on them stays within the per-client budget (BURST + SHARE x the flood's length + one body,
    bounded by 2 s here); the stream and ``/ping`` go on. The slowdown it causes is a figure:
    ``python -m bench.hostile --flood``."""
    server = hostile_server
    before = metric_value(wait_for(server, idle), "djl_refused_parse_seconds_total")
    run = measure(server.url, flood(server.url, 5.0), new_tokens=MAX_TOKENS)
    spent = metric_value(metrics(server), "djl_refused_parse_seconds_total") - before
    flood_seconds = run.window["end"] - run.window["start"]
    assert run.statuses and all(key.endswith(" 400") for key in run.statuses), run.statuses
    assert len(run.stamps) >= MAX_TOKENS and run.gaps_during()
    assert run.pings and all(latency != float("inf") for _, latency in run.pings)
    assert 0 < spent <= BURST + SHARE * flood_seconds + 2.0, (spent, flood_seconds)


@pytest.mark.parametrize("route", ["/invocations", "/v1/chat/completions"])
def test_a_too_long_chat_body_is_400_naming_messages_on_every_route(server, route):
    """A chat body names its prompt ``messages`` whatever the route; LMI's /invocations used to
    name ``inputs``, a field the client never sent. Both bounds: characters, then tokens."""
    for content in ("hello world " * 300_000, "a b " * WINDOW):
        resp = httpx.post(server.url + route, json={"messages": [{"role": "user", "content": content}],
                                                    "max_tokens": 2}, timeout=60)
        assert resp.status_code == 400, resp.text
        assert "messages" in resp.text and "inputs" not in resp.text, resp.text
