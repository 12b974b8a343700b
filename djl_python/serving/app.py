"""The FastAPI application of ``djl-serve``: life cycle, health and metrics.

``create_app(config, engine_factory)`` returns an app whose model loads in the
background (a worker thread) when the app starts, so the server answers at
once: ``GET /ping`` is 503 while loading, 200 when ready, and 503 with the
reason when loading failed, timed out (``model_loading_timeout``) or the server
is draining after SIGTERM. Routes:

* SageMaker ``GET /ping``; ``GET /health`` (vLLM's and TGI's name for the same check: 200 once
  the model is loaded, 503 while loading, after a failed load or while draining);
  ``GET /version`` (``{"version": <package version>}``, as vLLM's); ``GET /metrics``
  (Prometheus, one registry per app);
* the generation routes (LMI, OpenAI, TGI) of ``routes.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from djl_python.api.names import served_model_name
from djl_python.api.prompt import PromptBuilder, auto_tool_parser
from djl_python.config import HandlerConfig
from djl_python.config.serving import default_max_request_bytes
from djl_python.engine.engine import Engine
from djl_python.serving import routes
from djl_python.serving.async_engine import AsyncEngine
from djl_python.serving.http_common import ServerState
from djl_python.serving.metrics import ServingMetrics

logger = logging.getLogger(__name__)
EngineFactory = Callable[[HandlerConfig], Engine]


def create_app(config: HandlerConfig, engine_factory: EngineFactory, *, model_name: Optional[str] = None) -> FastAPI:
    """Build the app. ``engine_factory(config)`` runs in a worker thread at startup and returns an ``Engine``."""
    metrics = ServingMetrics()
    state = ServerState(config=config, metrics=metrics, model_name=model_name
                        or served_model_name(config.model_id, config.model_dir),
                        max_request_bytes=config.max_request_bytes or default_max_request_bytes(config.n_positions))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(_load(state, engine_factory))
        try:
            yield
        finally:
            loader.cancel()
            if state.engine is not None:
                await state.engine.shutdown(0.0)
            state.prompt_executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="djl-serve", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = state
    app.state.created = int(time.time())  # /v1/models "created"
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.include_router(routes.router)
    routes.document_bodies(app)

    @app.get("/ping")
    async def ping() -> Response:
        return _health(state)

    @app.get("/health")
    async def health() -> Response:
        return _health(state)

    @app.get("/version")
    async def version() -> dict[str, Optional[str]]:
        return {"version": _version()}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


def _health(state: ServerState) -> JSONResponse:
    """200 ``{"status": "healthy"}`` when requests can run, else 503 with the reason."""
    try:
        engine = state.require_engine()
    except Exception as err:  # noqa: BLE001 - every reason for "not ready" is a 503
        return JSONResponse({"status": "unhealthy", "message": str(err)}, status_code=503)
    if not engine.accepting:
        return JSONResponse({"status": "unhealthy", "message": "the engine loop has stopped"}, status_code=503)
    return JSONResponse({"status": "healthy"})


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
    backend_info = engine.backend.info
    state.info = {"backend": backend_info.name, "device": backend_info.device, "dtype": backend_info.dtype,
                  "version": _version()}
    async_engine = AsyncEngine(
        engine,
        max_waiting_requests=config.max_waiting_requests,
        predict_timeout=float(config.predict_timeout),
        metrics=state.metrics,
        max_unsent_tokens=config.max_unsent_tokens,
    )
    async_engine.start()
    limits = engine.limits
    if not config.max_request_bytes:  # the default follows the resolved n_positions
        state.max_request_bytes = default_max_request_bytes(limits.n_positions)
    # The one place the transport meets the tokenizer; prompts longer than any accepted one are
    # refused by their character count before tokenising.
    state.prompts = PromptBuilder(engine.tokenizer, max_prompt_tokens=min(limits.max_prompt_len, limits.n_positions - 1),
                                  model_defaults=engine.defaults, tool_parser=auto_tool_parser(config))
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
    engine thread's parallel regions with throttled spinning, and every decode step is slower
    (docs/performance.md, "What was optimised, and what it bought").
    """
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="djl-model-loader")
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    finally:
        executor.shutdown(wait=False)  # the thread exits once fn returns, even after a timeout


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("djl_python")
    except Exception:  # noqa: BLE001 - not installed as a distribution: the source tree's own
        from djl_python import __version__

        return __version__


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
