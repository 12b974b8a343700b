"""LMI requests: one body -> a validated ``LmiRequest`` -> engine requests.

Shared by the DJL handler (``djl_python.transformers_neuronx``) and the HTTP
server (``/invocations``, ``/predictions/{model}``). Pure: no model, no I/O.

Two request shapes are accepted (DJL LMI schema):

* LMI: ``{"inputs": str | [str], "parameters": {...}, "stream": bool}``;
  a ``text/plain`` body is the ``inputs`` string itself. Unknown parameters
  are ignored (as DJL does) and listed in ``LmiRequest.ignored``; the
  transport logs them.
* Chat: ``{"messages": [...], ...}``: exactly the OpenAI chat body
  (``djl_python.api.openai.ChatCompletionRequest``) plus ``output_formatter``,
  validated by the same schema as ``/v1/chat/completions``; unknown fields are
  refused there as here.

Every problem raises ``InvalidRequest(field, message)`` where ``field`` is the
path the user wrote (``parameters.max_new_tokens``, ``messages.0.content``).
Unlike DJL/TNX, ``presence_penalty`` keeps its own meaning and never turns into
``repetition_penalty``. The response side is ``djl_python.api.lmi_render``.

Structured output on the LMI schema: ``parameters.structured_outputs`` (vLLM's
``SamplingParams.structured_outputs``, which LMI's vLLM rolling batch passed through) or
``parameters.grammar`` (TGI's shape, for ``tgi_compat`` clients); at most one. A chat
request uses the OpenAI fields (``response_format``, ``tools``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from djl_python.api.body import Body, FailFastList, json_object, validate
from djl_python.api.chat import ChatMessage
from djl_python.api.openai import ChatCompletionRequest
from djl_python.api.prompt import EngineRequest, PromptBuilder
from djl_python.api.sampling import requested_knobs, sampling_params, with_knob_fields
from djl_python.api.structured import StructuredOutputs, TgiGrammar, one_constraint
from djl_python.api.tools import ToolPlan
from djl_python.config.lmi import OutputFormatterName
from djl_python.engine.request import InvalidRequest, SamplingParams

# LMI's default when a request does not say (DJL: 30 new tokens).
LMI_DEFAULT_MAX_NEW_TOKENS = 30

CONTENT_TYPES = {
    "json": "application/json",
    "jsonlines": "application/jsonlines",
    "sse": "text/event-stream",
    "json_chat": "application/json",
    "jsonlines_chat": "application/jsonlines",
    "none": "text/plain",
}
OUTPUT_FORMATTERS = frozenset(CONTENT_TYPES)
OutputFormatter = OutputFormatterName  # the same names that option.output_formatter accepts
StopSpec = Optional[Union[str, FailFastList[str]]]


class _Lenient(BaseModel):
    # strict: "5" is not an int and 1 is not a bool; extra keys are kept so we can report them.
    model_config = ConfigDict(strict=True, extra="allow", frozen=True, allow_inf_nan=False)


class LmiParameters(with_knob_fields("_LmiKnobs", _Lenient)):  # type: ignore[misc]
    """The ``parameters`` object of an LMI request (names as in DJL LMI); every sampling knob
    (``temperature``, ``top_k``, ``top_p``, ``typical_p``, ``repetition_penalty``, ``min_p``) is a field."""

    max_new_tokens: Optional[int] = None
    do_sample: Optional[bool] = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: Optional[int] = None
    ignore_eos: bool = False
    stop: StopSpec = None
    stop_sequences: StopSpec = None
    stop_token_ids: Optional[FailFastList[int]] = None
    details: bool = False
    decoder_input_details: bool = False
    return_full_text: bool = False
    logprobs: Optional[Union[bool, int]] = None
    top_n_tokens: int = Field(default=0, ge=0, le=20)
    output_formatter: Optional[OutputFormatter] = None
    structured_outputs: Optional[StructuredOutputs] = None
    grammar: Optional[TgiGrammar] = None
    # Accepted only at their neutral value: we decode one sequence per request.
    n: int = 1
    best_of: Optional[int] = None
    num_beams: int = 1


class LmiBody(_Lenient):
    inputs: Union[str, FailFastList[str]]
    parameters: LmiParameters = LmiParameters()
    stream: bool = False


class LmiChatBody(ChatCompletionRequest):
    """The OpenAI chat body plus LMI's ``output_formatter`` (``json_chat`` / ``jsonlines_chat``...)."""

    output_formatter: Optional[OutputFormatter] = None


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
    messages: Optional[tuple[ChatMessage, ...]] = None
    stream: bool = False
    details: bool = False
    decoder_input_details: bool = False
    return_full_text: bool = False
    top_n_tokens: int = 0
    tgi_compat: bool = False
    model: Optional[str] = None
    ignored: tuple[str, ...] = field(default=())
    tools: Optional[ToolPlan] = None  # a chat request's tools (``djl_python.api.tools``)

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def check_single(self) -> None:
        """Raise ``InvalidRequest("inputs")`` unless this is a chat or holds exactly one prompt
        (a rolling batch and an HTTP route take one per request; DJL's static batch takes lists)."""
        if not self.is_chat and len(self.prompts) != 1:
            raise InvalidRequest("inputs", f"expected one prompt per request, got {len(self.prompts)}")


def parse_request(
    body: Body,
    content_type: Optional[str] = "application/json",
    *,
    default_output_formatter: Optional[str] = None,
    tgi_compat: bool = False,
    model_defaults: Mapping[str, Any] = {},  # noqa: B006 - read only
    tool_parser: Optional[str] = None,
) -> LmiRequest:
    """Validate one request body.

    ``content_type`` starting with ``text/plain`` wraps the body as ``inputs``.
    ``default_output_formatter`` (``option.output_formatter``) applies when the
    request names none; ``tgi_compat`` (``option.tgi_compat``) switches the
    json/jsonlines/sse shapes to TGI's. Sampling knobs the request leaves unset take the
    model's ``model_defaults`` (``PromptBuilder.model_defaults``), as on every API;
    ``tool_parser`` (``PromptBuilder.tool_parser``) reads a chat's ``tool_choice: auto`` calls. Raises
    ``InvalidRequest``.
    """
    data = json_object(body, content_type)
    if "messages" in data:
        # Chat keeps the OpenAI shapes: option.output_formatter names a text format.
        return _parse_chat(data, model_defaults, tool_parser)
    return _parse_lmi(data, default_output_formatter, tgi_compat, model_defaults)


def _stops(value: StopSpec) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


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


def _parse_lmi(data: dict[str, Any], default_formatter: Optional[str], tgi_compat: bool,
               model_defaults: Mapping[str, Any]) -> LmiRequest:
    if "inputs" not in data:
        raise InvalidRequest("inputs", "missing: an LMI request needs 'inputs' (or 'messages' for chat)")
    req: LmiBody = validate(LmiBody, data)
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
    # DJL v0.28.0 (engines/python/setup/djl_python/request.py) sets tgi_compat on the request input
    # only for the json and sse formatters; there, details default on (output_formatter.py).
    tgi_compat = tgi_compat and formatter in ("json", "sse")
    details = p.details or tgi_compat
    # Per-token log-probs appear in every streamed token and in json details.
    want_logprobs = bool(p.logprobs) or top_n > 0 or details or formatter in ("jsonlines", "sse")
    stop_name = "stop_sequences" if p.stop_sequences is not None else "stop"
    constraint = one_constraint(
        ("parameters.structured_outputs",
         p.structured_outputs.constraint("parameters.structured_outputs") if p.structured_outputs else None),
        ("parameters.grammar", p.grammar.constraint("parameters.grammar") if p.grammar else None))
    params = sampling_params(
        requested_knobs(p), model_defaults, do_sample=bool(p.do_sample), prefix="parameters.",
        names={"stop": stop_name, "top_logprobs": "top_n_tokens"},
        max_new_tokens=p.max_new_tokens if p.max_new_tokens is not None else LMI_DEFAULT_MAX_NEW_TOKENS,
        presence_penalty=p.presence_penalty, frequency_penalty=p.frequency_penalty, seed=p.seed,
        stop=_stops(p.stop if p.stop is not None else p.stop_sequences),
        stop_token_ids=tuple(p.stop_token_ids or ()), ignore_eos=p.ignore_eos,
        logprobs=want_logprobs, top_logprobs=top_n, constraint=constraint,
    )
    return LmiRequest(
        params=params, output_formatter=formatter, prompts=prompts, stream=req.stream, details=details,
        decoder_input_details=p.decoder_input_details, return_full_text=p.return_full_text, top_n_tokens=top_n,
        tgi_compat=tgi_compat,
        ignored=tuple(sorted((p.model_extra or {}).keys())) + tuple(sorted((req.model_extra or {}).keys())),
    )


def _parse_chat(data: dict[str, Any], model_defaults: Mapping[str, Any], tool_parser: Optional[str]) -> LmiRequest:
    req: LmiChatBody = validate(LmiChatBody, data)
    params = req.to_sampling_params(model_defaults, tool_parser)
    formatter = _resolve_formatter(req.output_formatter, None, chat=True, stream=bool(req.stream),
                                   tgi_compat=False, field_name="output_formatter")
    return LmiRequest(
        params=params, output_formatter=formatter, messages=tuple(req.messages), stream=bool(req.stream),
        details=True, model=req.model, top_n_tokens=req.top_logprobs or 0, tools=req.tool_plan(tool_parser),
    )


def to_engine(req: LmiRequest, prompts: PromptBuilder) -> list[EngineRequest]:
    """One engine request per prompt (a chat request, or each of ``inputs``)."""
    if req.is_chat:
        tools = req.tools.template_tools() if req.tools is not None else None
        return [prompts.build(list(req.messages or ()), req.params, tools=tools)]
    return [prompts.build(text, req.params) for text in req.prompts]
