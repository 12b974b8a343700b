"""OpenAI-compatible routes: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``.

Streaming responses are server-sent events of ``text_completion`` /
``chat.completion.chunk`` objects ending with ``data: [DONE]``. With
``stream_options.include_usage`` every chunk carries ``"usage": null`` and one
last chunk carries the usage with an empty ``choices`` list. A failure after
the stream started is sent as an ``{"error": {...}}`` event (the OpenAI client
raises it as ``APIError``); before that, errors are plain HTTP errors with
OpenAI's body ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, AsyncIterator, Optional, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from djl_python.engine.chat import render_chat
from djl_python.engine.request import OPENAI_FINISH_REASONS, InvalidRequest, RequestOutput
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
    start_generation,
    token_text,
    whole_response,
)
from djl_python.serving.openai_schemas import ChatCompletionRequest, CompletionRequest

router = APIRouter()


def openai_error(err: ApiError) -> JSONResponse:
    body = {"error": {"message": err.message, "type": err.kind, "param": err.param, "code": err.status}}
    return JSONResponse(body, status_code=err.status, headers=err.headers)


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = server_state(request)
    return {
        "object": "list",
        "data": [{"id": state.model_name, "object": "model", "created": 0, "owned_by": "djl-serve"}],
    }


@router.post("/v1/completions", response_model=None)
async def completions(request: Request) -> Response:
    return await _serve(request, chat=False)


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request) -> Response:
    return await _serve(request, chat=True)


async def _serve(request: Request, *, chat: bool) -> Response:
    state = server_state(request)
    rid = uuid.uuid4().hex
    try:
        body: Union[CompletionRequest, ChatCompletionRequest] = parse_body(
            ChatCompletionRequest if chat else CompletionRequest, await read_json_object(request)
        )
        params = body.sampling_params()
        engine = state.require_engine()
        tokenizer = engine.engine.tokenizer
        if isinstance(body, ChatCompletionRequest):
            text = render_chat(tokenizer, [m.as_template_dict() for m in body.messages])
            prompt_ids = encode_prompt(tokenizer, text, chat=True)
        else:
            prompt = body.single_prompt()
            prompt_ids = encode_prompt(tokenizer, prompt) if isinstance(prompt, str) else list(prompt)
        first, rest = await start_generation(request, engine, prompt_ids, params, rid)
    except ClientDisconnected:
        return Response(status_code=499)
    except InvalidRequest as err:  # the engine names the prompt "inputs"; OpenAI calls it otherwise
        field = ("messages" if chat else "prompt") if err.field == "inputs" else err.field
        return openai_error(ApiError(400, err.message, field))
    except Exception as err:  # noqa: BLE001 - every failure becomes an OpenAI error body
        return openai_error(api_error(err))

    shape = _Shape(chat, f"{'chatcmpl' if chat else 'cmpl'}-{rid}", state.model_name, tokenizer, body)
    if body.stream:
        return ClosingStreamingResponse(
            _sse(shape, all_outputs(first, rest), body.include_usage), media_type="text/event-stream"
        )
    outputs = await whole_response(request, first, rest, openai_error)
    return outputs if isinstance(outputs, Response) else JSONResponse(shape.whole(outputs))


class _Shape:
    """Builds the response objects of one request (chat or legacy completion)."""

    def __init__(self, chat: bool, response_id: str, model: str, tokenizer: Any, body: Any) -> None:
        self.chat = chat
        self.id = response_id
        self.model = model
        self.tokenizer = tokenizer
        self.logprobs = bool(body.logprobs) if chat else body.logprobs is not None
        self.created = int(time.time())

    def envelope(self, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion" if self.chat else "text_completion") + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    @staticmethod
    def usage(out: RequestOutput) -> dict[str, int]:
        return {
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.generated_tokens,
            "total_tokens": out.prompt_tokens + out.generated_tokens,
        }

    def choice(self, outputs: list[RequestOutput], text: str, chunk: bool, first: bool = False) -> dict[str, Any]:
        last = outputs[-1]
        reason = OPENAI_FINISH_REASONS.get(last.finish_reason or "", last.finish_reason) if last.finished else None
        choice: dict[str, Any] = {"index": 0}
        if self.chat and chunk:
            choice["delta"] = {"role": "assistant", "content": text} if first else {"content": text}
        elif self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice["logprobs"] = self._logprobs(outputs) if self.logprobs else None
        choice["finish_reason"] = reason
        return choice

    def whole(self, outputs: list[RequestOutput]) -> dict[str, Any]:
        text = "".join(out.text for out in outputs)
        choices = [self.choice(outputs, text, False)]
        return {**self.envelope(False), "choices": choices, "usage": self.usage(outputs[-1])}

    def _logprobs(self, outputs: list[RequestOutput]) -> Optional[dict[str, Any]]:
        ids, lps, tops = [], [], []
        for out in outputs:
            ids += out.token_ids
            lps += out.logprobs
            tops += out.top_logprobs
        texts = [token_text(self.tokenizer, t) for t in ids]
        # A list per token: different ids can decode to the same text (partial UTF-8).
        named_tops = [[(token_text(self.tokenizer, t), lp) for t, lp in top.items()] for top in tops]
        if self.chat:
            content = []
            for i, (text, lp) in enumerate(zip(texts, lps)):
                top = named_tops[i] if i < len(named_tops) else []
                content.append({**_entry(text, lp), "top_logprobs": [_entry(t, v) for t, v in top]})
            return {"content": content}
        offsets, pos = [], 0
        for text in texts:
            offsets.append(pos)
            pos += len(text)
        return {
            "tokens": texts,
            "token_logprobs": lps,
            "top_logprobs": [dict(top) for top in named_tops] or None,
            "text_offset": offsets,
        }


def _entry(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def _event(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _sse(shape: _Shape, outputs: AsyncIterator[RequestOutput], include_usage: bool) -> AsyncIterator[str]:
    """The chunk stream of one request; closing it aborts the request."""
    first = True
    last: Optional[RequestOutput] = None
    try:
        async for out in outputs:
            last = out
            if out.finish_reason == "error":
                yield _event({"error": {"message": out.error or "generation failed", "type": "server_error",
                                        "param": None, "code": 500}})
                break
            if not (out.text or out.token_ids or out.finished or first):
                continue
            chunk = {**shape.envelope(True), "choices": [shape.choice([out], out.text, True, first)]}
            if include_usage:
                chunk["usage"] = None
            first = False
            yield _event(chunk)
    except Exception as err:  # noqa: BLE001 - e.g. predict_timeout: report it in-band
        e = api_error(err)
        yield _event({"error": {"message": e.message, "type": e.kind, "param": None, "code": e.status}})
    else:
        if include_usage and last is not None and last.finish_reason != "error":
            yield _event({**shape.envelope(True), "choices": [], "usage": shape.usage(last)})
    finally:
        await outputs.aclose()  # type: ignore[attr-defined]
    yield "data: [DONE]\n\n"
