"""The FastAPI application of ``djl-serve``: life cycle, health, metrics and the LMI routes.

``create_app(config, engine_factory)`` returns an app whose model loads in the
background (a worker thread) when the app starts, so the server answers at
once: ``GET /ping`` is 503 while loading, 200 when ready, and 503 with the
reason when loading failed, timed out (``model_loading_timeout``) or the server
is draining after SIGTERM. Routes:

* SageMaker ``GET /ping``, ``POST /invocations``; DJL ``POST /predictions/{model}``
  (LMI request schema and output formats, ``djl_python.serving.lmi``);
* TGI (``tgi_api``) and OpenAI (``openai_api``) routes;
* ``GET /metrics`` (Prometheus, one registry per app).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from djl_python.config import HandlerConfig
from djl_python.engine.chat import render_chat
from djl_python.engine.engine import Engine
from djl_python.serving import openai_api, tgi_api
from djl_python.serving.async_engine import AsyncEngine
from djl_python.serving.http_common import (
    ApiError,
    ClientDisconnected,
    ClosingStreamingResponse,
    ServerState,
    all_outputs,
    api_error,
    collect_outputs,
    encode_prompt,
    server_state,
    special_ids,
    start_generation,
    token_text,
)
from djl_python.serving.lmi import parse_request
from djl_python.serving.lmi_formatters import ResponseFormatter, make_formatter
from djl_python.serving.metrics import ServingMetrics

logger = logging.getLogger(__name__)
EngineFactory = Callable[[HandlerConfig], Engine]


def served_model_name(config: HandlerConfig) -> str:
    """The name clients use (``model`` in OpenAI, ``{model}`` in DJL): the model id, or the folder name."""
    source = config.model_id or config.model_dir
    if not source:
        return "default"
    path = Path(source)
    return path.name if path.exists() or source.startswith(("/", ".", "s3://")) else source


def create_app(config: HandlerConfig, engine_factory: EngineFactory, *, model_name: Optional[str] = None) -> FastAPI:
    """Build the app. ``engine_factory(config)`` runs in a worker thread at startup and returns an ``Engine``."""
    metrics = ServingMetrics()
    state = ServerState(config=config, metrics=metrics, model_name=model_name or served_model_name(config))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(_load(state, engine_factory))
        try:
            yield
        finally:
            loader.cancel()
            if state.engine is not None:
                await state.engine.shutdown(0.0)

    app = FastAPI(title="djl-serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = state
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.include_router(openai_api.router)
    app.include_router(tgi_api.router)

    @app.get("/ping")
    async def ping() -> Response:
        try:
            engine = state.require_engine()
        except Exception as err:  # noqa: BLE001 - every reason for "not ready" is a 503
            return JSONResponse({"status": "unhealthy", "message": str(err)}, status_code=503)
        if not engine.accepting:
            return JSONResponse({"status": "unhealthy", "message": "the engine loop has stopped"}, status_code=503)
        return JSONResponse({"status": "healthy"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post("/invocations", response_model=None)
    async def invocations(request: Request) -> Response:
        return await _lmi(request)

    @app.post("/predictions/{model}", response_model=None)
    async def predictions(request: Request, model: str) -> Response:
        if model != state.model_name:
            return lmi_error(ApiError(404, f"model {model!r} not found; this server serves {state.model_name!r}",
                                      "model"))
        return await _lmi(request)

    return app


async def drain(app: FastAPI, grace_seconds: float) -> bool:
    """Refuse new requests (503) and wait up to ``grace_seconds`` for running ones (SIGTERM)."""
    state: ServerState = app.state.server
    state.draining = True
    return await state.engine.drain(grace_seconds) if state.engine is not None else True


async def _load(state: ServerState, engine_factory: EngineFactory) -> None:
    config = state.config
    timeout = float(config.model_loading_timeout)
    started = time.monotonic()
    try:
        engine = await asyncio.wait_for(_run_in_own_thread(engine_factory, config), timeout)
    except asyncio.TimeoutError:
        state.load_error = f"loading did not finish within model_loading_timeout={timeout:g}s"
        logger.error("%s", state.load_error)
        return
    except Exception as err:  # noqa: BLE001 - reported by /ping; the server stays up to say so
        state.load_error = f"{type(err).__name__}: {err}"
        logger.error("model loading failed: %s", state.load_error)  # djl-serve logs internal errors' tracebacks
        return
    backend_info = getattr(getattr(engine, "backend", None), "info", None)
    state.info = {
        "backend": getattr(backend_info, "name", None),
        "device": getattr(backend_info, "device", None),
        "dtype": getattr(backend_info, "dtype", None),
        "version": _version(),
    }
    async_engine = AsyncEngine(
        engine,
        max_waiting_requests=config.max_waiting_requests,
        predict_timeout=float(config.predict_timeout),
        metrics=state.metrics,
    )
    async_engine.start()
    state.engine = async_engine
    logger.info(
        "djl-serve ready: model=%s backend=%s device=%s dtype=%s slots=%d n_positions=%d (loaded in %.1fs)",
        state.model_name, state.info["backend"], state.info["device"], state.info["dtype"],
        engine.limits.max_slots, engine.limits.n_positions, time.monotonic() - started,
    )


async def _run_in_own_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a fresh thread that exits when it returns (``asyncio.to_thread`` would use
    the default executor, whose thread lives on).

    A live thread that has run torch keeps its own OpenMP thread pool; libgomp then runs the
    engine thread's parallel regions with throttled spinning, and a decode step on 2 cores
    takes ~40 % longer (SmolLM2-135M, batch 8: 91 ms against 65 ms, measured).
    """
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="djl-model-loader")
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    finally:
        executor.shutdown(wait=False)  # the thread exits once fn returns, even after a timeout


def _version() -> Optional[str]:
    try:
        from importlib.metadata import version

        return version("djl_python")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return None


def lmi_error(err: ApiError) -> JSONResponse:
    """DJL Serving's error body: ``{"code", "type", "message", "param"}``."""
    message = err.message if err.param is None else f"{err.param}: {err.message}"
    body = {"code": err.status, "type": err.kind, "message": message, "param": err.param}
    return JSONResponse(body, status_code=err.status, headers=err.headers)


async def _lmi(request: Request) -> Response:
    """One LMI request (``inputs`` or chat ``messages``) in its requested output format."""
    state = server_state(request)
    config = state.config
    rid = uuid.uuid4().hex
    try:
        req = parse_request(
            await request.body(), request.headers.get("content-type", "application/json"),
            default_output_formatter=config.output_formatter,
            tgi_compat=config.tgi_compat,
        )
        engine = state.require_engine()
        tokenizer = engine.engine.tokenizer
        if req.is_chat:
            prompt_text = render_chat(tokenizer, list(req.messages or ()))
            prompt_ids = encode_prompt(tokenizer, prompt_text, chat=True)
        else:
            prompt_text = req.prompt
            prompt_ids = encode_prompt(tokenizer, prompt_text)
        first, rest = await start_generation(request, engine, prompt_ids, req.params, rid)
    except ClientDisconnected:
        return Response(status_code=499)
    except Exception as err:  # noqa: BLE001 - every failure becomes a DJL error body
        return lmi_error(api_error(err))
    if req.is_chat and req.model is None:
        req = dataclasses.replace(req, model=state.model_name)
    formatter = make_formatter(
        req, request_id=rid, prompt_text=prompt_text, prompt_token_ids=prompt_ids,
        decode_token=functools.partial(token_text, tokenizer), special_token_ids=special_ids(tokenizer),
    )
    if req.stream:
        return ClosingStreamingResponse(_fragments(formatter, all_outputs(first, rest)),
                                        media_type=formatter.content_type)
    try:
        outputs = await collect_outputs(request, first, rest)
    except ClientDisconnected:
        return Response(status_code=499)
    except Exception as err:  # noqa: BLE001
        return lmi_error(api_error(err))
    body = "".join(formatter.format(out) for out in outputs)
    status = 500 if outputs[-1].finish_reason == "error" else 200
    return Response(body, status_code=status, media_type=formatter.content_type)


async def _fragments(formatter: ResponseFormatter, outputs: AsyncIterator[Any]) -> AsyncIterator[str]:
    """The formatter's fragments; a failure after the first byte ends the body in-band."""
    try:
        async for out in outputs:
            fragment = formatter.format(out)
            if fragment:
                yield fragment
    except Exception as err:  # noqa: BLE001 - e.g. predict_timeout
        if not formatter.done:
            yield formatter.error(api_error(err).message)
    finally:
        await outputs.aclose()  # type: ignore[attr-defined]


class RequestMetricsMiddleware:
    """Counts every HTTP request by route template and status code (``499``: client went away)."""

    def __init__(self, app: Any, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_and_record(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            code = "499" if scope.get("djl.disconnected") else str(status["code"])
            self.metrics.http_requests.labels(path, code).inc()
