"""The HTTP transport's request path, written once for every route family.

``serve(request, translate, error_body)`` is the whole life of one generation
request: read the body, let the API layer translate it (``translate`` returns
an ``EngineRequest`` and a ``Renderer``), submit it to the ``AsyncEngine``,
wait for the first output (so refusals still get a 4xx/5xx status), then stream
the renderer's fragments or send its whole body. Routes only name their API's
translation and error shape (``routes.py``).

Ownership: each request's engine stream has ONE owner, ``OutputStream``. It is
closed on every path (finished, failed, client gone, cancelled), and closing it
aborts the engine request (``AsyncEngine.generate``'s ``finally``). Streaming
bodies are closed by ``ClosingStreamingResponse``; whole bodies by ``serve``.
A client that leaves marks the request as ``499`` for the metrics.

Limits applied here: the body size (``max_request_bytes``: 413 while reading,
before parsing); parsing and tokenising run in a worker thread, never on the
event loop; a client's refused bodies may take only a bounded share of that
thread (``RefusalBudget``: its next body waits, unread, while it is over); a
stream whose writes stay blocked is ended (``stream_stall_timeout``).

Where to add things: a rule about connections (how many, header and body
timeouts) belongs in ``connections.py``; one about an HTTP request (body size,
rate limits) in ``serve`` or a middleware in ``app.py``; a rule about what a
request may ask for belongs in the API layer (``djl_python.api``), so that the
DJL handler applies it too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, TypeVar, Union

from fastapi import Request
from starlette.requests import ClientDisconnect
from fastapi.responses import JSONResponse, Response
from starlette.responses import StreamingResponse

from djl_python.api.errors import ApiError, ServerUnavailable, to_api_error
from djl_python.api.prompt import EngineRequest, PromptBuilder
from djl_python.api.render import Renderer
from djl_python.config import HandlerConfig
from djl_python.engine.request import InvalidRequest, RequestOutput
from djl_python.serving.async_engine import AsyncEngine
from djl_python.serving.connections import TRANSPORT_KEY, bound_stream_buffers
from djl_python.serving.fanout import submit
from djl_python.serving.metrics import ServingMetrics
from djl_python.serving.refusals import RefusalBudget, TooManyWaiting

T = TypeVar("T")
logger = logging.getLogger(__name__)
# The event loop's cost of receiving a body, charged to a refused one: a fixed estimate per byte,
# not the wall time of the upload, which a slow network would inflate.
RECEIVE_BYTES_PER_SECOND = 256 * 1024 * 1024


@dataclass
class ServerState:
    """Per-app state, stored as ``app.state.server``.

    ``engine`` and ``prompts`` are set once loading succeeded; ``load_error`` once
    it failed. ``draining`` is set by SIGTERM: new generation requests get 503.
    """

    config: HandlerConfig
    metrics: ServingMetrics
    model_name: str
    engine: Optional[AsyncEngine] = None
    prompts: Optional[PromptBuilder] = None
    load_error: Optional[str] = None
    draining: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    max_request_bytes: int = 0  # set by create_app (option.max_request_bytes or its default)
    # One thread parses, templates and tokenises requests off the event loop; one, because a
    # fast tokenizer refuses concurrent calls that change its settings ("Already borrowed").
    prompt_executor: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="djl-prompts"))
    refusals: RefusalBudget = field(default_factory=RefusalBudget)

    def require_engine(self) -> AsyncEngine:
        """The running engine, or ``ServerUnavailable`` saying why there is none."""
        if self.draining:
            raise ServerUnavailable("the server is shutting down")
        if self.load_error is not None:  # permanent: no Retry-After, not "overloaded"
            raise ServerUnavailable(f"the model failed to load: {self.load_error}", permanent=True)
        if self.engine is None:
            raise ServerUnavailable("the model is still loading")
        return self.engine

    def require_prompts(self) -> PromptBuilder:
        self.require_engine()
        if self.prompts is None:  # set together with engine; never None once it is
            raise ServerUnavailable("the model is still loading")
        return self.prompts


def server_state(request: Request) -> ServerState:
    return request.app.state.server


@dataclass(frozen=True)
class Call:
    """What a route's translation gets: the raw body and the server it runs on."""

    body: bytes
    content_type: str
    state: ServerState
    request_id: str

    @property
    def prompts(self) -> PromptBuilder:
        """The prompt builder; ``ServerUnavailable`` while loading (so a bad body still gets its 400 first)."""
        return self.state.require_prompts()


Translate = Callable[[Call], tuple[Union[EngineRequest, list[EngineRequest]], Renderer]]


def content_type_refusal(header: Optional[str], accepts_text: bool) -> Optional[ApiError]:
    """A 415 for a body whose ``Content-Type`` the route does not read, else ``None``. Every
    generation route reads JSON (``application/json``, any ``+json`` type, or no header at all);
    LMI's routes also read ``text/plain`` as the prompt. A form, CSV or multipart body would
    otherwise be parsed as JSON and refused for reasons the client cannot see."""
    media = (header or "").split(";", 1)[0].strip().lower()
    if media in ("", "application/json") or media.endswith("+json") or (accepts_text and media == "text/plain"):
        return None
    allowed = "application/json" + (" or text/plain" if accepts_text else "")
    return ApiError(415, f"Content-Type {media!r} is not supported here; send {allowed}", "content-type")


async def serve(request: Request, translate: Translate, error_body: Callable[[ApiError], Response],
                prompt_field: str = "inputs", accepts_text: bool = False) -> Response:
    """One generation request, start to end (see the module docstring)."""
    state = server_state(request)
    stream: Optional[OutputStream] = None
    refusal = content_type_refusal(request.headers.get("content-type"), accepts_text)
    if refusal is not None:
        return error_body(refusal)
    try:
        client = request.client.host if request.client is not None else ""
        await state.refusals.wait(client)  # a client over its budget waits before its body is read
        raw = await read_body(request, state.max_request_bytes)
        call = Call(raw, request.headers.get("content-type", "application/json"), state, uuid.uuid4().hex)
        async with state.refusals.turn(client):
            # Parsing, chat templating and tokenising take time in proportion to the body: never on
            # the event loop, which serves /ping, /metrics and every stream.
            translated = await asyncio.get_running_loop().run_in_executor(
                state.prompt_executor, _timed_translate, translate, call)
            if isinstance(translated, _Refused):
                cost = len(raw) / RECEIVE_BYTES_PER_SECOND + translated.seconds
                state.refusals.charge(client, cost)
                state.metrics.refused_parse_seconds.inc(cost)
                raise translated.error
        engine_request, renderer = translated
        if isinstance(engine_request, EngineRequest) and engine_request.prompt_field != "prompt":
            prompt_field = engine_request.prompt_field  # a chat body, on whatever route
        engine = state.require_engine()
        stream = OutputStream(request, submit(engine, engine_request, call.request_id))
        await stream.start()
    except BaseException as err:
        if stream is not None:
            await stream.close()
        if isinstance(err, ClientDisconnected):
            return Response(status_code=499)
        if isinstance(err, TooManyWaiting):
            return error_body(ApiError(429, str(err), "body", headers={"Retry-After": str(err.retry_after)}))
        if not isinstance(err, Exception):
            raise
        return error_body(to_api_error(err, prompt_field))
    if renderer.stream:
        return ClosingStreamingResponse(stream.body(renderer), renderer.content_type,
                                        float(state.config.stream_stall_timeout))
    try:
        body, status = renderer.whole(await stream.collect())
    except ClientDisconnected:
        return Response(status_code=499)
    except Exception as err:  # noqa: BLE001 - every failure becomes the API's error body
        return error_body(to_api_error(err, prompt_field))
    finally:
        await stream.close()
    return Response(body, status_code=status, media_type=renderer.content_type)


@dataclass(frozen=True)
class _Refused:
    error: BaseException
    seconds: float  # the parsing thread's CPU time spent before refusing


def _timed_translate(translate: Translate, call: Call) -> Union[tuple[Any, Renderer], _Refused]:
    """``translate(call)``, or, when it refuses the body (a 4xx), the refusal and its cost."""
    started = time.thread_time()
    try:
        return translate(call)
    except (InvalidRequest, ApiError) as err:
        if isinstance(err, ApiError) and not 400 <= err.status < 500:
            raise
        return _Refused(err, time.thread_time() - started)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes:
    at once from ``Content-Length``, else while the (chunked) body arrives, before any parsing,
    so an oversized body costs neither memory nor time beyond ``limit``."""
    if limit > 0:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit, int(declared))
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if 0 < limit < size:
                raise _too_large(limit, None)
            chunks.append(chunk)
    except ClientDisconnect:  # the client left, or body_timeout closed the connection
        request.scope["djl.disconnected"] = True
        raise ClientDisconnected() from None
    return b"".join(chunks)


def _too_large(limit: int, size: Optional[int]) -> ApiError:
    got = f"{size} bytes" if size is not None else "more"
    return ApiError(413, f"request body too large: {got}; the limit is {limit} bytes (max_request_bytes)", "body")


class ClientDisconnected(Exception):
    """The client went away before a non-streaming response was ready."""


class OutputStream:
    """The one owner of one request's engine outputs; ``close`` aborts an unfinished request."""

    def __init__(self, request: Request, outputs: AsyncIterator[RequestOutput]) -> None:
        self._request = request
        self._outputs = outputs
        self._first: Optional[RequestOutput] = None

    async def start(self) -> None:
        """Wait for the first output, so that refusals (400/503) surface before any header is sent."""
        self._first = await unless_disconnected(self._request, self._outputs.__anext__())

    async def _all(self) -> AsyncIterator[RequestOutput]:
        if self._first is None:  # start() has not run: nothing was submitted
            return
        yield self._first
        async for out in self._outputs:  # ends after the final output (of every prompt, see fanout)
            yield out

    async def collect(self) -> list[RequestOutput]:
        """Every output (whole responses); ``ClientDisconnected`` if the client leaves first."""
        async def gather() -> list[RequestOutput]:
            return [out async for out in self._all()]

        return await unless_disconnected(self._request, gather())

    async def body(self, renderer: Renderer) -> AsyncIterator[str]:
        """The renderer's fragments; a failure after the first byte ends the body in-band."""
        try:
            async with contextlib.aclosing(self._all()) as outputs:
                async for out in outputs:
                    fragment = renderer.feed(out)
                    if fragment:
                        yield fragment
                    if renderer.done:
                        break
        except Exception as err:  # noqa: BLE001 - e.g. predict_timeout
            if not renderer.done:
                yield renderer.fail(to_api_error(err))
        finally:
            await self.close()
        tail = renderer.end()
        if tail:
            yield tail

    async def close(self) -> None:
        await self._outputs.aclose()  # type: ignore[attr-defined]


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` while watching for the client to disconnect.

    On a disconnect the work is cancelled and ``ClientDisconnected`` is raised.
    Needed for non-streaming requests, which otherwise only notice when writing.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    disconnected = False
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        disconnected = task not in done
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # the work has unwound before we go on
    if disconnected:
        request.scope["djl.disconnected"] = True
        raise ClientDisconnected()
    return task.result()


async def _wait_disconnect(request: Request) -> None:
    # The body has been read, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


class StreamStalled(Exception):
    """A stream's write stayed blocked for ``stream_stall_timeout`` seconds."""


class ClosingStreamingResponse(StreamingResponse):
    """A ``StreamingResponse`` that always closes its body iterator and ends a stalled stream.

    Starlette cancels the sending task on a disconnect, but a body generator that
    is merely abandoned would only be finalised by the garbage collector; closing
    it here aborts the engine request at once. A body that did not run to its end
    marks the request as disconnected (``499`` in the metrics).

    The connection's send buffers are bounded first (``bound_stream_buffers``), so a client
    that stops reading blocks the stream's writes within a few tens of KiB; a write blocked
    for ``stall_timeout`` seconds ends the stream and closes the connection.
    """

    def __init__(self, content: AsyncIterator[str], media_type: str, stall_timeout: float) -> None:
        super().__init__(content, media_type=media_type)
        self.stall_timeout = stall_timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        inner = self.body_iterator
        completed = False
        transport = scope.get(TRANSPORT_KEY)
        bound_stream_buffers(transport)

        async def tracked() -> AsyncIterator[Any]:
            nonlocal completed
            async for chunk in inner:
                yield chunk
            completed = True

        async def watched_send(message: Any) -> None:
            # Writes stay paused from above the high-water mark until the buffer is back at the
            # low-water mark: at or under it, the write cannot wait (the common case).
            if transport is None or transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[0]:
                await send(message)
                return
            try:
                await asyncio.wait_for(send(message), self.stall_timeout)
            except asyncio.TimeoutError:
                raise StreamStalled() from None

        self.body_iterator = tracked()
        try:
            await super().__call__(scope, receive, watched_send)
        except StreamStalled:
            logger.warning("ending a stream whose client read nothing for %gs (stream_stall_timeout)",
                           self.stall_timeout)
            if transport is not None:
                transport.abort()  # close() would wait for the unread buffer to drain, i.e. forever
                await asyncio.sleep(0)  # let connection_lost mark the request as disconnected
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
            await inner.aclose()  # type: ignore[attr-defined]
            if not completed:
                scope["djl.disconnected"] = True


def json_error(body: dict[str, Any], err: ApiError) -> JSONResponse:
    return JSONResponse(body, status_code=err.status, headers=err.headers)
