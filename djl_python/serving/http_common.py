"""What every route family (LMI, TGI, OpenAI) shares: server state, errors, disconnects.

Each family renders errors in its own shape, but they all start from one
``ApiError(status, message, param)``; ``api_error`` maps the exceptions the
engine bridge and the validators raise onto HTTP statuses:

=====================  ======  ===========================================
exception              status  meaning
=====================  ======  ===========================================
InvalidRequest         400     bad field (``param`` names it)
EngineOverloaded       503     waiting queue full (``Retry-After`` header)
EngineUnavailable      503     loading, failed to load or shutting down
RequestTimeout         504     not finished within ``predict_timeout``
anything else          500     a bug; logged with its traceback
=====================  ======  ===========================================
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, TypeVar

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.responses import StreamingResponse

from djl_python.config import HandlerConfig
from djl_python.engine.request import InvalidRequest, RequestOutput, SamplingParams
from djl_python.serving.async_engine import AsyncEngine, EngineOverloaded, EngineUnavailable, RequestTimeout
from djl_python.serving.metrics import ServingMetrics

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ServerState:
    """Per-app state, stored as ``app.state.server``.

    ``engine`` is set once loading succeeded; ``load_error`` once it failed.
    ``draining`` is set by SIGTERM: new generation requests get 503.
    """

    config: HandlerConfig
    metrics: ServingMetrics
    model_name: str
    engine: Optional[AsyncEngine] = None
    load_error: Optional[str] = None
    draining: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def require_engine(self) -> AsyncEngine:
        """The running engine, or ``EngineUnavailable`` saying why there is none."""
        if self.draining:
            raise EngineUnavailable("the server is shutting down")
        if self.load_error is not None:
            raise EngineUnavailable(f"the model failed to load: {self.load_error}")
        if self.engine is None:
            raise EngineUnavailable("the model is still loading")
        return self.engine


def server_state(request: Request) -> ServerState:
    return request.app.state.server


class ApiError(Exception):
    """An HTTP error before the response started; each API family renders it in its own shape."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers or {}

    @property
    def kind(self) -> str:
        """A short error type, as OpenAI's ``type`` and TGI's ``error_type``."""
        return {400: "invalid_request_error", 404: "not_found_error", 503: "overloaded",
                504: "timeout"}.get(self.status, "server_error")


def api_error(err: BaseException) -> ApiError:
    """Map an exception raised while validating or generating onto an ``ApiError``."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, InvalidRequest):
        return ApiError(400, err.message, err.field)
    if isinstance(err, EngineOverloaded):
        return ApiError(503, str(err), headers={"Retry-After": str(err.retry_after)})
    if isinstance(err, EngineUnavailable):
        return ApiError(503, str(err), headers={"Retry-After": "5"})
    if isinstance(err, RequestTimeout):
        return ApiError(504, str(err))
    logger.error("unexpected error", exc_info=err)
    return ApiError(500, f"internal error: {type(err).__name__}: {err}")


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; ``InvalidRequest("body")`` otherwise."""
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("body", "empty request body; expected a JSON object")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidRequest("body", f"malformed JSON: {err}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body", f"expected a JSON object, got {type(data).__name__}")
    return data


def encode_prompt(tokenizer: Any, text: str, *, chat: bool = False) -> list[int]:
    """Token ids of a prompt: the same call as ``Engine.generate`` for text, and no
    extra special tokens for a rendered chat template (it already holds them)."""
    return list(tokenizer.encode(text, add_special_tokens=not chat))


async def start_generation(
    request: Request, engine: AsyncEngine, prompt_ids: list[int], params: SamplingParams,
    request_id: Optional[str] = None,
) -> tuple[RequestOutput, AsyncIterator[RequestOutput]]:
    """Submit and wait for the first output, so that refusals (400/503) surface before
    any response header is sent. Returns the first output and the rest of the stream.

    Raises ``ClientDisconnected`` if the client leaves meanwhile; the request is aborted
    whatever happens to the wait (the stream is closed on every failure path).
    """
    outputs = engine.generate(prompt_ids, params, request_id)
    try:
        first = await unless_disconnected(request, outputs.__anext__())
    except BaseException:
        await outputs.aclose()
        raise
    return first, outputs


async def all_outputs(first: RequestOutput, rest: AsyncIterator[RequestOutput]) -> AsyncIterator[RequestOutput]:
    """``first`` followed by ``rest``; closing this closes (and so aborts) ``rest``."""
    try:
        yield first
        if not first.finished:
            async for out in rest:
                yield out
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


class ClientDisconnected(Exception):
    """The client went away before a non-streaming response was ready."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` while watching for the client to disconnect.

    On a disconnect the work is cancelled (so the engine request is aborted by
    ``generate``'s ``finally``) and ``ClientDisconnected`` is raised. Needed for
    non-streaming requests, which otherwise only notice when writing the reply.
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
                await task  # the work has unwound (and aborted) before we go on
    if disconnected:
        request.scope["djl.disconnected"] = True
        raise ClientDisconnected()
    return task.result()


async def _wait_disconnect(request: Request) -> None:
    # The body has been read, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


class ClosingStreamingResponse(StreamingResponse):
    """A ``StreamingResponse`` that always closes its body iterator.

    Starlette cancels the sending task on a disconnect, but a body generator that
    is merely abandoned would only be finalised by the garbage collector; closing
    it here aborts the engine request at once. A body that did not run to its end
    marks the request as disconnected (``499`` in the metrics).
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        inner = self.body_iterator
        completed = False

        async def tracked() -> AsyncIterator[Any]:
            nonlocal completed
            async for chunk in inner:
                yield chunk
            completed = True

        self.body_iterator = tracked()
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
            await inner.aclose()  # type: ignore[attr-defined]
            if not completed:
                scope["djl.disconnected"] = True


def token_text(tokenizer: Any, token_id: int) -> str:
    """The text of one token on its own (for per-token logprobs and TGI tokens)."""
    return tokenizer.decode([token_id])


def special_ids(tokenizer: Any) -> frozenset[int]:
    return frozenset(getattr(tokenizer, "all_special_ids", ()) or ())


async def collect_outputs(
    request: Request, first: RequestOutput, rest: AsyncIterator[RequestOutput]
) -> list[RequestOutput]:
    """Every output of a request, for non-streaming responses; ``ClientDisconnected`` if the
    client leaves first (the request is aborted: the stream is always closed)."""
    async def collect() -> list[RequestOutput]:
        return [out async for out in all_outputs(first, rest)]

    try:
        return await unless_disconnected(request, collect())
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


async def whole_response(
    request: Request,
    first: RequestOutput,
    rest: AsyncIterator[RequestOutput],
    error_body: Callable[[ApiError], Response],
) -> list[RequestOutput] | Response:
    """A non-streaming request's outputs, or the response that ends it instead: 499 when
    the client went away, ``error_body`` for a failure while waiting, and ``error_body``
    with 500 when generation itself ended in error."""
    try:
        outputs = await collect_outputs(request, first, rest)
    except ClientDisconnected:
        return Response(status_code=499)
    except Exception as err:  # noqa: BLE001 - every failure becomes the API's error body
        return error_body(api_error(err))
    if outputs[-1].finish_reason == "error":
        return error_body(ApiError(500, outputs[-1].error or "generation failed"))
    return outputs


def parse_body(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """Validate ``data``; the first pydantic error becomes ``InvalidRequest(<dotted field path>)``."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(p) for p in first["loc"] if not _union_tag(p)]
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown or unsupported field"
        raise InvalidRequest(".".join(loc) or "body", message) from None


def _union_tag(part: Any) -> bool:
    # pydantic adds a union member's type ("str", "list[int]", "function-after[...]") to the path.
    return isinstance(part, str) and (part in ("str", "int", "float", "bool") or "[" in part)
