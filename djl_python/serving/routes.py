"""The generation routes: each names its API's translation and error shape, nothing more.

* LMI (DJL Serving): ``POST /invocations`` (SageMaker), ``POST /predictions/{model}``;
  LMI bodies (``inputs``) and chat bodies (``messages``), every LMI output format.
* OpenAI: ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models``; a
  ``model`` that names none of ``api.names.served_names`` is a 404 listing them (vLLM's rule).
* TGI: ``POST /generate``, ``POST /generate_stream``, ``POST /`` (``"stream"`` in the
  body picks the shape; a one-element list when whole), ``GET /info``.

Parsing, translation and rendering are ``djl_python.api``'s; the request's life
(submit, stream or collect, abort on disconnect) is ``http_common.serve``'s.

The routes read their bodies themselves (so every bad body gets the API's own
400 naming the field, never FastAPI's 422) and declare the pydantic models of
``djl_python.api`` that validate them with ``body_of``; ``document_bodies`` puts
those models into the app's OpenAPI document.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from djl_python.api import lmi, openai, tgi
from djl_python.api.body import json_object, validate
from djl_python.api.errors import ApiError, to_api_error
from djl_python.api.lmi_render import lmi_renderer
from djl_python.api.names import is_location, served_names
from djl_python.api.openai_render import ChoicesRenderer, OpenAiRenderer, error_object as openai_error_object
from djl_python.api.prompt import EngineRequest
from djl_python.api.render import Renderer
from djl_python.serving.http_common import Call, ServerState, json_error, serve, server_state

router = APIRouter()
logger = logging.getLogger(__name__)

_REF = "#/components/schemas/{model}"
DOCUMENTED: list[type[BaseModel]] = []  # every model a route declares, for document_bodies


def body_of(*models: type[BaseModel], text: bool = False) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON body validated by one of ``models`` (LMI also takes text/plain)."""
    DOCUMENTED.extend(m for m in models if m not in DOCUMENTED)
    refs = [{"$ref": _REF.format(model=m.__name__)} for m in models]
    content: dict[str, Any] = {"application/json": {"schema": refs[0] if len(refs) == 1 else {"anyOf": refs}}}
    if text:
        content["text/plain"] = {"schema": {"type": "string"}}
    return {"requestBody": {"required": True, "content": content}}


def document_bodies(app: FastAPI) -> None:
    """Make ``app.openapi()`` hold the JSON schemas of every ``body_of`` model under ``components``."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            refs, defs = models_json_schema([(m, "validation") for m in DOCUMENTED], ref_template=_REF)
            names = {ref["$ref"].rsplit("/", 1)[1] for ref in refs.values()}
            if names != {m.__name__ for m in DOCUMENTED}:  # pydantic renamed a clash: the refs above are wrong
                raise RuntimeError(f"request model names clash in the OpenAPI document: {sorted(names)}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# -- LMI ------------------------------------------------------------------------------------

def lmi_error(err: ApiError) -> JSONResponse:
    """DJL Serving's error body: ``{"code", "type", "message", "param"}``."""
    return json_error({"code": err.status, "type": err.kind, "message": err.text, "param": err.param}, err)


def _lmi(call: Call) -> tuple[EngineRequest, Renderer]:
    config = call.state.config
    req = lmi.parse_request(call.body, call.content_type, default_output_formatter=config.output_formatter,
                            tgi_compat=config.tgi_compat, model_defaults=call.prompts.model_defaults,
                            tool_parser=call.prompts.tool_parser)
    if req.ignored:  # DJL ignores unknown LMI parameters; say so, as the DJL handler does
        logger.warning("ignoring unsupported request fields: %s", ", ".join(req.ignored))
    req.check_single()  # one prompt per HTTP request
    engine_request = lmi.to_engine(req, call.prompts)[0]
    return engine_request, lmi_renderer(req, engine_request, call.prompts, request_id=call.request_id,
                                        model_name=call.state.model_name)


_LMI_BODY = body_of(lmi.LmiBody, lmi.LmiChatBody, text=True)


@router.post("/invocations", response_model=None, openapi_extra=_LMI_BODY)
async def invocations(request: Request) -> Response:
    return await serve(request, _lmi, lmi_error, accepts_text=True)


@router.post("/predictions/{model}", response_model=None, openapi_extra=_LMI_BODY)
async def predictions(request: Request, model: str) -> Response:
    name = server_state(request).model_name
    if model != name:
        return lmi_error(ApiError(404, f"model {model!r} not found; this server serves {name!r}", "model"))
    return await serve(request, _lmi, lmi_error, accepts_text=True)


# -- OpenAI ---------------------------------------------------------------------------------

def openai_error(err: ApiError) -> JSONResponse:
    return json_error(openai_error_object(err), err)


def _chat(call: Call) -> tuple[EngineRequest, Renderer]:
    body = validate(openai.ChatCompletionRequest, json_object(call.body))
    check_model(call.state, body.model)
    engine_request = body.to_engine(call.prompts)
    return engine_request, OpenAiRenderer(chat=True, request_id=call.request_id, model=call.state.model_name,
                                          logprobs=body.wants_logprobs, stream=bool(body.stream),
                                          include_usage=body.include_usage,
                                          tools=body.tool_plan(call.prompts.tool_parser))


def _completion(call: Call) -> tuple[list[EngineRequest], Renderer]:
    body = validate(openai.CompletionRequest, json_object(call.body))
    check_model(call.state, body.model)
    requests = body.to_engine(call.prompts)
    prefixes = [body.echo_text(r, call.prompts) for r in requests]
    common = dict(request_id=call.request_id, model=call.state.model_name, logprobs=body.wants_logprobs,
                  stream=bool(body.stream), include_usage=body.include_usage)
    if len(requests) == 1:
        return requests, OpenAiRenderer(chat=False, prefix=prefixes[0], **common)
    return requests, ChoicesRenderer(prefixes=prefixes, **common)


def check_model(state: ServerState, model: Optional[str]) -> None:
    """vLLM's rule: no ``model`` or one of the served names; anything else is a 404 listing them.
    TGI's clients always send ``"tgi"`` (TGI serves one model and ignores the field): accepted too."""
    names = served_names(state.model_name, state.config.model_id, state.config.model_dir)
    if model and model not in names and model != tgi.TGI_CLIENT_MODEL:
        shown = [n for n in names if not is_location(n)]  # a path or bucket is the server's business
        raise ApiError(404, f"the model {model!r} does not exist; this server serves "
                       + ", ".join(repr(n) for n in shown), "model")


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """vLLM's model card: ``created`` (when this server started) and ``max_model_len`` (None while loading)."""
    state = server_state(request)
    engine = state.engine
    max_model_len = engine.core.limits.n_positions if engine is not None else None
    return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": request.app.state.created,
                                        "owned_by": "djl-serve", "root": state.model_name,
                                        "max_model_len": max_model_len}]}


@router.post("/v1/completions", response_model=None, openapi_extra=body_of(openai.CompletionRequest))
async def completions(request: Request) -> Response:
    return await serve(request, _completion, openai_error, prompt_field="prompt")


@router.post("/v1/chat/completions", response_model=None, openapi_extra=body_of(openai.ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    return await serve(request, _chat, openai_error, prompt_field="messages")


# -- TGI ------------------------------------------------------------------------------------

def tgi_error(err: ApiError) -> JSONResponse:
    return json_error(tgi.error_object(err), err)


def _tgi(stream: Optional[bool], as_list: bool):
    def translate(call: Call) -> tuple[EngineRequest, Renderer]:
        body = validate(tgi.TgiRequest, json_object(call.body))
        engine_request = body.to_engine(call.prompts)
        streamed = body.stream if stream is None else stream
        return engine_request, tgi.TgiRenderer(body, engine_request, call.prompts, stream=streamed, as_list=as_list)
    return translate


_generate, _generate_stream, _compat = _tgi(False, False), _tgi(True, False), _tgi(None, True)


@router.post("/generate", response_model=None, openapi_extra=body_of(tgi.TgiRequest))
async def generate(request: Request) -> Response:
    return await serve(request, _generate, tgi_error)


@router.post("/generate_stream", response_model=None, openapi_extra=body_of(tgi.TgiRequest))
async def generate_stream(request: Request) -> Response:
    return await serve(request, _generate_stream, tgi_error)


@router.post("/", response_model=None, openapi_extra=body_of(tgi.TgiRequest))
async def compat(request: Request) -> Response:
    return await serve(request, _compat, tgi_error)


@router.get("/info")
async def info(request: Request) -> Response:
    state = server_state(request)
    try:
        engine = state.require_engine()
    except Exception as err:  # noqa: BLE001
        return tgi_error(to_api_error(err))
    limits = engine.core.limits
    return JSONResponse({
        "model_id": state.model_name, "model_sha": None, "model_pipeline_tag": "text-generation",
        "model_dtype": state.info.get("dtype"), "model_device_type": state.info.get("device"),
        "max_concurrent_requests": limits.max_slots + engine.max_waiting_requests, "max_best_of": 1,
        "max_stop_sequences": 16, "max_input_tokens": min(limits.max_prompt_len, limits.n_positions - 1),
        "max_total_tokens": limits.n_positions, "max_batch_size": limits.max_slots, "router": "djl-serve",
        "version": state.info.get("version"),
    })
