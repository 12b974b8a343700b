"""Text Generation Inference-compatible routes: ``/generate``, ``/generate_stream``, ``/``, ``/info``.

``/generate`` answers ``{"generated_text", "details"?}``; ``/`` is what the
``text_generation`` client posts to, with ``"stream"``: a list ``[{...}]`` when
false (as TGI's compat route) and the ``/generate_stream`` events when true.
Stream events are ``{"index", "token": {id, text, logprob, special},
"top_tokens"?, "generated_text": null | str, "details": null | {...}}``; only
the last event carries ``generated_text`` and ``details``. A failure after the
stream started is an ``{"error", "error_type"}`` event, as in TGI.

Prompt log-probabilities are not computed: ``details.prefill`` (with
``decoder_input_details``) lists the prompt tokens with ``logprob: null``.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Optional

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from djl_python.engine.request import TGI_FINISH_REASONS, RequestOutput
from djl_python.serving.http_common import (
    ApiError,
    ClientDisconnected,
    ClosingStreamingResponse,
    all_outputs,
    api_error,
    encode_prompt,
    parse_body,
    read_json_object,
    server_state,
    special_ids,
    start_generation,
    token_text,
    whole_response,
)
from djl_python.serving.tgi_schemas import TgiRequest

router = APIRouter()
_ERROR_TYPES = {400: "validation", 503: "overloaded", 504: "timeout"}


def tgi_error(err: ApiError) -> JSONResponse:
    body = {"error": err.message if err.param is None else f"{err.param}: {err.message}",
            "error_type": _ERROR_TYPES.get(err.status, "generation")}
    return JSONResponse(body, status_code=err.status, headers=err.headers)


@router.get("/info")
async def info(request: Request) -> Response:
    state = server_state(request)
    try:
        engine = state.require_engine()
    except Exception as err:  # noqa: BLE001
        return tgi_error(api_error(err))
    limits = engine.engine.limits
    return JSONResponse({
        "model_id": state.model_name,
        "model_sha": None,
        "model_pipeline_tag": "text-generation",
        "model_dtype": state.info.get("dtype"),
        "model_device_type": state.info.get("device"),
        "max_concurrent_requests": limits.max_slots + engine.max_waiting_requests,
        "max_best_of": 1,
        "max_stop_sequences": 16,
        "max_input_tokens": min(limits.max_prompt_len, limits.n_positions - 1),
        "max_total_tokens": limits.n_positions,
        "max_batch_size": limits.max_slots,
        "router": "djl-serve",
        "version": state.info.get("version"),
    })


@router.post("/generate", response_model=None)
async def generate(request: Request) -> Response:
    return await _serve(request, stream=False, as_list=False)


@router.post("/generate_stream", response_model=None)
async def generate_stream(request: Request) -> Response:
    return await _serve(request, stream=True, as_list=False)


@router.post("/", response_model=None)
async def compat(request: Request) -> Response:
    """TGI's compat route: ``"stream"`` in the body picks the response shape."""
    return await _serve(request, stream=None, as_list=True)


async def _serve(request: Request, *, stream: Optional[bool], as_list: bool) -> Response:
    state = server_state(request)
    try:
        body: TgiRequest = parse_body(TgiRequest, await read_json_object(request))
        params = body.sampling_params()
        engine = state.require_engine()
        tokenizer = engine.engine.tokenizer
        prompt_ids = encode_prompt(tokenizer, body.inputs)
        if body.parameters.truncate is not None:
            prompt_ids = prompt_ids[-body.parameters.truncate:]
        first, rest = await start_generation(request, engine, prompt_ids, params)
    except ClientDisconnected:
        return Response(status_code=499)
    except Exception as err:  # noqa: BLE001 - every failure becomes a TGI error body
        return tgi_error(api_error(err))

    shape = _Shape(body, tokenizer, prompt_ids, params.seed)
    if stream if stream is not None else body.stream:
        return ClosingStreamingResponse(_events(shape, all_outputs(first, rest)), media_type="text/event-stream")
    outputs = await whole_response(request, first, rest, tgi_error)
    if isinstance(outputs, Response):
        return outputs
    result = shape.whole(outputs)
    return JSONResponse([result] if as_list else result)


class _Shape:
    """Builds TGI's response objects for one request."""

    def __init__(self, body: TgiRequest, tokenizer: Any, prompt_ids: list[int], seed: Optional[int]) -> None:
        self.p = body.parameters
        self.prefix = body.inputs if self.p.return_full_text else ""
        self.tokenizer = tokenizer
        self.special = special_ids(tokenizer)
        self.prompt_ids = prompt_ids
        self.seed = seed

    def token(self, token_id: int, logprob: Optional[float], text: Optional[str] = None) -> dict[str, Any]:
        text = token_text(self.tokenizer, token_id) if text is None else text
        return {"id": token_id, "text": text, "logprob": logprob, "special": token_id in self.special}

    def tokens(self, out: RequestOutput) -> list[tuple[dict[str, Any], Optional[list[dict[str, Any]]]]]:
        """The step's tokens with their top alternatives. As in TGI's incremental decoding, a
        token's text is what it added to the output (the step's text delta goes to its last
        token), so token texts always concatenate to ``generated_text``."""
        result = []
        n = len(out.token_ids)
        for i, tid in enumerate(out.token_ids):
            lp = out.logprobs[i] if i < len(out.logprobs) else None
            top = None
            if self.p.top_n_tokens and i < len(out.top_logprobs):
                top = [self.token(t, v) for t, v in out.top_logprobs[i].items()]
            result.append((self.token(tid, lp, out.text if i == n - 1 else ""), top))
        return result

    def details(self, last: RequestOutput, stream: bool) -> dict[str, Any]:
        d: dict[str, Any] = {
            "finish_reason": TGI_FINISH_REASONS.get(last.finish_reason or "length", "length"),
            "generated_tokens": last.generated_tokens,
            "seed": self.seed,
        }
        if stream:
            d["input_length"] = len(self.prompt_ids)
        return d

    def whole(self, outputs: list[RequestOutput]) -> dict[str, Any]:
        text = self.prefix + "".join(out.text for out in outputs)
        result: dict[str, Any] = {"generated_text": text}
        if self.p.details:
            pairs = [pair for out in outputs for pair in self.tokens(out)]
            d = self.details(outputs[-1], stream=False)
            d["prefill"] = [
                {"id": t, "text": token_text(self.tokenizer, t), "logprob": None} for t in self.prompt_ids
            ] if self.p.decoder_input_details else []
            d["tokens"] = [tok for tok, _ in pairs]
            if self.p.top_n_tokens:
                d["top_tokens"] = [top or [] for _, top in pairs]
            result["details"] = d
        return result


def _event(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _events(shape: _Shape, outputs: AsyncIterator[RequestOutput]) -> AsyncIterator[str]:
    """One event per generated token; the last one carries the text and the details."""
    index, text = 0, shape.prefix
    try:
        async for out in outputs:
            text += out.text
            if out.finish_reason == "error" or (out.finished and not out.token_ids):
                yield _event({"error": out.error or f"request ended: {out.finish_reason}",
                              "error_type": "generation"})
                return
            pairs = shape.tokens(out)
            for i, (tok, top) in enumerate(pairs):
                index += 1
                final = out.finished and i == len(pairs) - 1
                event: dict[str, Any] = {"index": index, "token": tok, "generated_text": text if final else None,
                                         "details": shape.details(out, stream=True) if final else None}
                if top is not None:
                    event["top_tokens"] = top
                yield _event(event)
    except Exception as err:  # noqa: BLE001 - e.g. predict_timeout: report it in-band
        e = api_error(err)
        yield _event({"error": e.message, "error_type": _ERROR_TYPES.get(e.status, "generation")})
    finally:
        await outputs.aclose()  # type: ignore[attr-defined]
