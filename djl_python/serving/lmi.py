"""LMI request parsing: one user request body -> a typed ``LmiRequest``.

Shared by the DJL entry point (``djl_python.transformers_neuronx``) and the
HTTP server (``/invocations``). No torch, no model: pure functions.

Two request shapes are accepted (DJL LMI schema):

* LMI: ``{"inputs": str | [str], "parameters": {...}, "stream": bool}``;
  a ``text/plain`` body is the ``inputs`` string itself.
* Chat: ``{"messages": [{role, content}], "max_tokens", "temperature", ...}``
  (OpenAI-style). Rendering the messages with the chat template is the
  caller's job (``djl_python.engine.chat.render_chat``).

Every problem raises ``InvalidRequest(field, message)`` where ``field`` is the
path the user wrote (``parameters.max_new_tokens``, ``messages.0.content``).
Unknown parameters are ignored (as DJL does) and listed in
``LmiRequest.ignored``. Unlike DJL/TNX, ``presence_penalty`` keeps its own
meaning and never turns into ``repetition_penalty``.

The response side lives in ``djl_python.serving.lmi_formatters`` and is
re-exported here: ``make_formatter``, ``ResponseFormatter``,
``OUTPUT_FORMATTERS``, ``CONTENT_TYPES``. Typical use::

    req = parse_request(body, content_type, default_output_formatter=cfg.output_formatter,
                        tgi_compat=cfg.tgi_compat)              # InvalidRequest -> HTTP 400
    fmt = make_formatter(req, request_id=rid, prompt_text=prompt, prompt_token_ids=ids)
    for out in engine_outputs:                                  # RequestOutput, in order
        send(fmt.format(out))                                   # "" = nothing yet
    # on failure instead: send(fmt.error(message))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

from pydantic import BaseModel, ValidationError

from djl_python.engine.request import InvalidRequest, SamplingParams
from djl_python.serving.lmi_schema import ChatBody, ChatMessage, LmiBody, LmiParameters, StopSpec
from djl_python.serving.lmi_formatters import CONTENT_TYPES, OUTPUT_FORMATTERS, ResponseFormatter, make_formatter

__all__ = [
    "CONTENT_TYPES",
    "OUTPUT_FORMATTERS",
    "ChatBody",
    "LmiBody",
    "LmiParameters",
    "LmiRequest",
    "ResponseFormatter",
    "make_formatter",
    "parse_request",
]

@dataclass(frozen=True)
class LmiRequest:
    """One validated user request.

    Invariants: exactly one of ``prompts`` (non-empty) and ``messages`` is set;
    ``output_formatter`` is a key of ``OUTPUT_FORMATTERS``; ``params`` is a
    validated ``SamplingParams`` whose ``logprobs`` is on whenever the chosen
    output format reports per-token log-probabilities.
    """

    params: SamplingParams
    output_formatter: str
    prompts: tuple[str, ...] = ()
    messages: Optional[tuple[dict[str, Any], ...]] = None
    stream: bool = False
    details: bool = False
    decoder_input_details: bool = False
    return_full_text: bool = False
    top_n_tokens: int = 0
    tgi_compat: bool = False
    model: Optional[str] = None
    ignored: tuple[str, ...] = field(default=())

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    @property
    def prompt(self) -> str:
        """The single prompt of a non-chat request (rolling batch takes one per request)."""
        if len(self.prompts) != 1:
            raise InvalidRequest("inputs", f"expected one prompt per request, got {len(self.prompts)}")
        return self.prompts[0]


def parse_request(
    body: Union[bytes, str, Mapping[str, Any]],
    content_type: Optional[str] = "application/json",
    *,
    default_output_formatter: Optional[str] = None,
    tgi_compat: bool = False,
) -> LmiRequest:
    """Validate one request body.

    ``content_type`` starting with ``text/plain`` wraps the body as ``inputs``.
    ``default_output_formatter`` (``option.output_formatter``) applies when the
    request names none; ``tgi_compat`` (``option.tgi_compat``) switches the
    json/jsonlines/sse shapes to TGI's. Raises ``InvalidRequest``.
    """
    data = _decode_body(body, content_type)
    if not isinstance(data, dict):
        raise InvalidRequest("body", f"expected a JSON object, got {type(data).__name__}")
    if "messages" in data:
        # Chat keeps the OpenAI shapes: option.output_formatter names a text format.
        return _parse_chat(data)
    return _parse_lmi(data, default_output_formatter, tgi_compat)


def _decode_body(body: Union[bytes, str, Mapping[str, Any]], content_type: Optional[str]) -> Any:
    if isinstance(body, Mapping):
        return dict(body)
    if isinstance(body, (bytes, bytearray)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidRequest("body", f"not valid UTF-8: {e}") from None
    if content_type and content_type.lower().startswith("text/plain"):
        return {"inputs": body}
    if not body.strip():
        raise InvalidRequest("body", "empty request body")
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise InvalidRequest("body", f"invalid JSON: {e}") from None


def _validate(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """Pydantic validation whose most specific error becomes ``InvalidRequest(<field path>)``."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        # A union reports one error per member; the deepest path is the most specific one.
        paths = [[str(p) for p in err["loc"] if not _is_union_tag(p)] for err in e.errors()]
        best = max(range(len(paths)), key=lambda i: len(paths[i]))
        err, loc = e.errors()[best], ".".join(paths[best])
        raise InvalidRequest(loc or "body", err["msg"]) from None


def _is_union_tag(part: Any) -> bool:
    # pydantic adds the union member's type name (e.g. "str", "list[str]") to the error path.
    return isinstance(part, str) and (part in ("str", "int", "bool", "float") or "[" in part)


def _stops(value: StopSpec) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _sampling(prefix: str, names: Mapping[str, str], **kwargs: Any) -> SamplingParams:
    """Build ``SamplingParams``; its errors are renamed to the user's field path."""
    try:
        return SamplingParams(**kwargs)
    except InvalidRequest as e:
        raise InvalidRequest(prefix + names.get(e.field, e.field), e.message) from None


def _reject_unsupported(prefix: str, n: int, best_of: Optional[int] = None, num_beams: int = 1) -> None:
    if n != 1:
        raise InvalidRequest(prefix + "n", f"only n=1 is supported, got {n}")
    if best_of is not None and best_of != 1:
        raise InvalidRequest(prefix + "best_of", f"best_of is not supported, got {best_of}")
    if num_beams != 1:
        raise InvalidRequest(prefix + "num_beams", f"beam search is not supported, got num_beams={num_beams}")


def _resolve_formatter(explicit: Optional[str], default: Optional[str], *, chat: bool, stream: bool,
                       tgi_compat: bool, field_name: str) -> str:
    """DJL's choice: the request's formatter, else the configured one, else by chat/stream/tgi."""
    name = explicit or default
    if name is not None:
        if name not in OUTPUT_FORMATTERS:
            raise InvalidRequest(field_name, f"unknown output formatter {name!r}; expected one of {sorted(OUTPUT_FORMATTERS)}")
        return name
    if chat:
        return "jsonlines_chat" if stream else "json_chat"
    if stream:
        return "sse" if tgi_compat else "jsonlines"
    return "json"


def _parse_lmi(data: dict[str, Any], default_formatter: Optional[str], tgi_compat: bool) -> LmiRequest:
    if "inputs" not in data:
        raise InvalidRequest("inputs", "missing: an LMI request needs 'inputs' (or 'messages' for chat)")
    req: LmiBody = _validate(LmiBody, data)
    p = req.parameters
    prompts = (req.inputs,) if isinstance(req.inputs, str) else tuple(req.inputs)
    if not prompts:
        raise InvalidRequest("inputs", "empty list of prompts")
    _reject_unsupported("parameters.", p.n, p.best_of, p.num_beams)
    if p.max_new_tokens is not None and p.max_new_tokens <= 0:
        raise InvalidRequest("parameters.max_new_tokens", f"must be a positive integer, got {p.max_new_tokens}")
    if p.stop is not None and p.stop_sequences is not None:
        raise InvalidRequest("parameters.stop_sequences", "give either 'stop' or 'stop_sequences', not both")
    formatter = _resolve_formatter(p.output_formatter, default_formatter, chat=False, stream=req.stream,
                                   tgi_compat=tgi_compat, field_name="parameters.output_formatter")
    top_n = p.top_n_tokens or (p.logprobs if isinstance(p.logprobs, int) and not isinstance(p.logprobs, bool) else 0)
    if not 0 <= top_n <= 20:
        raise InvalidRequest("parameters.logprobs", f"must be in [0, 20], got {top_n}")
    details = p.details or tgi_compat
    # Per-token log-probs appear in every streamed token and in json details.
    want_logprobs = bool(p.logprobs) or top_n > 0 or details or formatter in ("jsonlines", "sse")
    kwargs: dict[str, Any] = dict(
        do_sample=bool(p.do_sample), temperature=p.temperature, top_k=p.top_k, top_p=p.top_p,
        typical_p=p.typical_p, repetition_penalty=p.repetition_penalty,
        presence_penalty=p.presence_penalty, frequency_penalty=p.frequency_penalty, seed=p.seed,
        stop=_stops(p.stop if p.stop is not None else p.stop_sequences),
        stop_token_ids=tuple(p.stop_token_ids or ()), ignore_eos=p.ignore_eos,
        logprobs=want_logprobs, top_logprobs=top_n,
    )
    if p.max_new_tokens is not None:
        kwargs["max_new_tokens"] = p.max_new_tokens
    stop_name = "stop_sequences" if p.stop_sequences is not None else "stop"
    params = _sampling("parameters.", {"stop": stop_name, "top_logprobs": "top_n_tokens"}, **kwargs)
    return LmiRequest(
        params=params, output_formatter=formatter, prompts=prompts, stream=req.stream, details=details,
        decoder_input_details=p.decoder_input_details, return_full_text=p.return_full_text, top_n_tokens=top_n,
        tgi_compat=tgi_compat and formatter in ("json", "jsonlines", "sse"),
        ignored=tuple(sorted((p.model_extra or {}).keys())) + tuple(sorted((req.model_extra or {}).keys())),
    )


def _message_dict(i: int, m: ChatMessage) -> dict[str, Any]:
    content = m.content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest(f"messages.{i}.content.{j}", "only text content parts are supported")
            texts.append(part["text"])
        content = "".join(texts)
    out: dict[str, Any] = {"role": m.role, "content": content if content is not None else ""}
    if m.name is not None:
        out["name"] = m.name
    return out


# Chat field names for the SamplingParams fields that can be invalid.
_CHAT_NAMES = {"max_new_tokens": "max_tokens", "top_logprobs": "top_logprobs"}


def _parse_chat(data: dict[str, Any]) -> LmiRequest:
    req: ChatBody = _validate(ChatBody, data)
    _reject_unsupported("", req.n)
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    if max_tokens is not None and max_tokens <= 0:
        raise InvalidRequest("max_tokens", f"must be a positive integer, got {max_tokens}")
    if req.top_logprobs and not req.logprobs:
        raise InvalidRequest("top_logprobs", "requires logprobs=true")
    # Chat default: generate until EOS or the context is full (the engine clamps to n_positions).
    kwargs: dict[str, Any] = dict(
        max_new_tokens=max_tokens if max_tokens is not None else 2**31 - 1,
        do_sample=req.temperature > 0, temperature=req.temperature, top_p=req.top_p,
        presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty, seed=req.seed,
        stop=_stops(req.stop), ignore_eos=req.ignore_eos, logprobs=req.logprobs,
        top_logprobs=req.top_logprobs,
    )
    params = _sampling("", _CHAT_NAMES, **kwargs)
    formatter = _resolve_formatter(req.output_formatter, None, chat=True, stream=req.stream,
                                   tgi_compat=False, field_name="output_formatter")
    return LmiRequest(
        params=params, output_formatter=formatter,
        messages=tuple(_message_dict(i, m) for i, m in enumerate(req.messages)),
        stream=req.stream, details=True, model=req.model, top_n_tokens=req.top_logprobs,
        ignored=tuple(sorted((req.model_extra or {}).keys())),
    )

