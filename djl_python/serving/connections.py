"""Bounds on HTTP connections: how many, how long a request may take to arrive, how long a
streaming client may leave its output unread.

uvicorn has none of these: a connection that sends half a header is held forever, and enough of
them exhaust the file descriptors, after which ``/ping`` times out and asyncio logs every failed
``accept``. ``guarded_protocol(limits)`` returns uvicorn's HTTP/1.1 protocol (h11) with:

* a cap on open connections: past ``max_connections``, a new connection gets a fast ``503`` and
  is closed before anything is read from it;
* a header timeout: a connection waiting for a request (new, or kept alive after a response)
  that has not delivered its whole header within ``header_timeout`` seconds gets ``408`` and is
  closed, however slowly the bytes trickle in;
* a body timeout: while a request body is being read, ``body_timeout`` seconds without a byte
  close the connection; the request ends as a disconnect (``499``). The clock does not run
  while the server itself has stopped reading (flow control);
* small send buffers for streams (``bound_stream_buffers``), so that a client that stops
  reading blocks its stream's writes after a few tens of KiB instead of the megabytes the
  kernel would buffer; ``ClosingStreamingResponse`` then ends a stream whose writes stay
  blocked for ``stream_stall_timeout`` seconds.

One sweep per server, every ``SWEEP_SECONDS``, checks the timeouts of every connection, so the
cost is one timer, not one per connection. Every protocol instance puts its transport into each
request's ASGI scope (``TRANSPORT_KEY``, pipelined requests included) for the streaming response.

``raise_fd_limit`` raises the process's open-file limit to what the OS allows, once, at start
(``djl_python.serving.cli``); ``effective_max_connections`` keeps the cap under that limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

SWEEP_SECONDS = 1.0
TRANSPORT_KEY = "djl.transport"
STREAM_SEND_BUFFER = 16 * 1024  # bytes the kernel may hold for one stream (Linux doubles it)
STREAM_WRITE_HIGH_WATER = 16 * 1024  # bytes the transport may hold before the stream's writes wait
FD_RESERVE = 256  # descriptors kept for model files, logs, the engine's pipes


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout: float
    body_timeout: float


def _raw_response(status: int, reason: str, message: str, retry_after: Optional[int] = None) -> bytes:
    body = json.dumps({"error": message, "code": status}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close"]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the limits of the module docstring (``limits`` is set on the
    subclass ``guarded_protocol`` makes)."""

    limits: ClassVar[ConnectionLimits]
    _sweeping: ClassVar[bool] = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        now = self.loop.time()
        self._waiting_since: Optional[float] = now  # waiting for a request's header since; None: not waiting
        self._last_read = now
        if len(self.connections) > self.limits.max_connections:
            transport.write(_raw_response(503, "Service Unavailable", "too many open connections "
                                          f"(max_connections={self.limits.max_connections}); retry later", 1))
            transport.close()
            return
        cls = type(self)
        if not cls._sweeping:
            cls._sweeping = True
            self.loop.call_later(SWEEP_SECONDS, cls._sweep, self.loop, self.connections)

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        super().data_received(data)

    def handle_events(self) -> None:
        # Every request starts here, pipelined ones too (uvicorn resumes them from
        # on_response_complete), and every return to waiting for a header passes here.
        super().handle_events()
        if self.scope is not None and TRANSPORT_KEY not in self.scope:
            self.scope[TRANSPORT_KEY] = self.transport  # type: ignore[literal-required]
        if self.conn.their_state is not h11.IDLE:
            self._waiting_since = None
        elif self._waiting_since is None:
            self._waiting_since = self.loop.time()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE:  # kept alive: the next header's clock starts now
            self._waiting_since = self.loop.time()

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        try:
            now = loop.time()
            for proto in list(connections):
                if isinstance(proto, GuardedH11Protocol):
                    proto._check(now)
        except Exception:  # noqa: BLE001 - the sweep must outlive any one connection's surprise
            logger.exception("connection sweep failed")
        finally:
            if connections:
                loop.call_later(SWEEP_SECONDS, cls._sweep, loop, connections)
            else:
                cls._sweeping = False

    def _check(self, now: float) -> None:
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._waiting_since is not None and now - self._waiting_since > self.limits.header_timeout:
                self.transport.write(_raw_response(408, "Request Timeout", "the request header did not arrive "
                                                   f"within header_timeout={self.limits.header_timeout:g}s"))
                self.transport.close()
        elif state is h11.SEND_BODY:
            if self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue):
                self._last_read = now  # the server is not reading: the client is not late
            elif now - self._last_read > self.limits.body_timeout:
                logger.info("closing a connection whose request body stalled for over %gs (body_timeout)",
                            self.limits.body_timeout)
                self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` enforcing ``limits``; one per server."""
    return type("GuardedH11ProtocolForServer", (GuardedH11Protocol,), {"limits": limits, "_sweeping": False})


def bound_stream_buffers(transport: Optional[asyncio.BaseTransport]) -> None:
    """Shrink one connection's send buffers for a streaming response (see the module docstring).
    Stays in force for later responses on the same connection; harmless there."""
    if not isinstance(transport, asyncio.WriteTransport):
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)
        except OSError:  # not a TCP socket (a test transport): nothing to bound
            pass
    transport.set_write_buffer_limits(high=STREAM_WRITE_HIGH_WATER)


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one (where the OS has the notion); the limit now."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 1 << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    except (ValueError, OSError):
        return soft


def effective_max_connections(configured: int, fd_limit: int) -> int:
    """``configured``, lowered (with a warning) to leave ``FD_RESERVE`` descriptors free."""
    room = max(16, fd_limit - FD_RESERVE)
    if configured > room:
        logger.warning("max_connections=%d lowered to %d: the open-file limit is %d (raise it with ulimit -n)",
                       configured, room, fd_limit)
        return room
    return configured
