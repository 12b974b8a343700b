"""Connections are bounded: a real ``djl-serve`` against thousands of idle half-sent headers,
a chunked body that never ends, a connection past the cap, and a flood of invalid requests.

One server (``header_timeout=5``, ``body_timeout=5``, ``max_connections=5050``) serves every
test here. Waits are upper bounds for something that must happen, never timings to meet.
"""

from __future__ import annotations

import resource
import socket
import time

import httpx
import pytest

from tests.serving.http_server import start_tiny_server

IDLE_CONNECTIONS = 5000
LIMITS = {"header_timeout": 5, "body_timeout": 5, "max_connections": IDLE_CONNECTIONS + 50}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    options = {"device": "cpu", "max_rolling_batch_size": 2, "n_positions": 64, **LIMITS}
    srv = start_tiny_server(tmp_path_factory, "connections", options, max_positions=64)
    yield srv
    srv.stop()


@pytest.fixture(scope="module", autouse=True)
def enough_descriptors():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = IDLE_CONNECTIONS + 500
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.fail(f"this test needs {needed} open files in the test process; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _address(server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def _half_header(server) -> socket.socket:
    sock = socket.create_connection(_address(server), timeout=10)
    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never the blank line that ends it
    return sock


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) is None
    except BlockingIOError:
        return True  # nothing to read and not closed
    finally:
        sock.setblocking(True)


def _read_until_closed(sock: socket.socket, within: float) -> bytes:
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_start_up_raises_the_open_file_limit_to_the_hard_limit_and_keeps_the_cap_under_it():
    from djl_python.serving.connections import FD_RESERVE, effective_max_connections, raise_fd_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        assert raise_fd_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert effective_max_connections(8192, 4096) == 4096 - FD_RESERVE
    assert effective_max_connections(100, 4096) == 100


def test_thousands_of_idle_half_headers_leave_ping_answering_then_get_408(guarded):
    idle = [_half_header(guarded) for _ in range(IDLE_CONNECTIONS)]
    try:
        time.sleep(0.5)  # let the server accept the last of them
        started = time.monotonic()
        ping = httpx.get(guarded.url + "/ping", timeout=1.0)
        assert ping.status_code == 200
        assert time.monotonic() - started < 5  # generous: httpx's timeout above is the 1 s bound
        assert all(_still_open(s) for s in idle[:50] + idle[-50:]), "the idle connections were closed before /ping"
        # header_timeout (5 s) plus one sweep: every half-sent header is answered 408 and closed.
        for sock in idle[:20] + idle[-20:]:
            answer = _read_until_closed(sock, within=30)
            assert answer.startswith(b"HTTP/1.1 408") and b"header_timeout" in answer, answer[:200]
    finally:
        for sock in idle:
            sock.close()


def test_a_connection_past_the_cap_gets_503_at_once_and_ping_recovers(guarded):
    held = [_half_header(guarded) for _ in range(LIMITS["max_connections"])]
    try:
        time.sleep(0.5)
        extra = socket.create_connection(_address(guarded), timeout=10)
        answer = _read_until_closed(extra, within=10)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"max_connections" in answer, answer[:200]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 30
    while httpx.get(guarded.url + "/ping", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "/ping did not recover after the connections closed"
        time.sleep(0.2)


def test_a_chunked_body_that_never_finishes_is_closed_after_body_timeout(guarded):
    sock = socket.create_connection(_address(guarded), timeout=10)
    sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n9\r\n{\"inputs\"\r\n")
    started = time.monotonic()
    _read_until_closed(sock, within=60)  # returns once the server closes the connection
    sock.close()
    assert time.monotonic() - started < 60, "the stalled body was never closed"
    assert "body_timeout" in guarded.logs()


def test_a_flood_of_invalid_requests_is_logged_once_per_interval(guarded):
    for _ in range(300):
        with socket.create_connection(_address(guarded), timeout=10) as sock:
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            _read_until_closed(sock, within=10)
    lines = [line for line in guarded.logs().splitlines() if "Invalid HTTP request" in line]
    assert 1 <= len(lines) <= 3, lines
    assert httpx.get(guarded.url + "/ping", timeout=5).status_code == 200
