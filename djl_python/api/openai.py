"""OpenAI request bodies (completions, chat completions) and their translation.

Unknown fields are rejected (``extra="forbid"``) and so are known fields we do
not implement when set to anything but their neutral value (``n > 1``,
``best_of > 1``, ``suffix``, ``logit_bias``, ``echo`` with log-probs): a client
must never believe an option took effect when it did not. Every error is
``InvalidRequest(<field path>)``.

Structured output: ``response_format`` and vLLM's ``structured_outputs`` on both endpoints
(``djl_python.api.structured``), at most one of them per request; tool calling (``tools``,
``tool_choice``, ``parallel_tool_calls``) on chat (``djl_python.api.tools``).

The fields vLLM adds are honoured as vLLM defines them (vllm-project/vllm,
vllm/entrypoints/openai/protocol.py): ``top_k`` (``-1`` or ``0``: disabled),
``min_p``, ``min_tokens``, ``repetition_penalty``, ``ignore_eos``,
``skip_special_tokens``, ``stop_token_ids``, and ``echo`` on completions (the prompt text leads the
completion). Fields that ask nothing of a server without storage, accounts or
tiers are accepted and change nothing: ``user``, ``store``, ``metadata``,
``service_tier``, ``best_of: 1``.

``ChatCompletionRequest`` is THE chat body: ``/v1/chat/completions``, LMI's
``/invocations`` with ``messages`` and the DJL handler all validate it (LMI adds
only ``output_formatter``), so one chat body gets one validation result.

Sampling follows OpenAI's semantics in vLLM's order (``to_sampling_params``): a knob the
request leaves unset takes the model's generation_config value, else OpenAI's default
(temperature 1.0); the request samples when that temperature is above 0, so
``temperature=0`` is greedy decoding. ``max_tokens`` unset means "until EOS or the
context is full" (the engine clamps it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from djl_python.api.body import FailFastList
from djl_python.api.chat import ChatMessage
from djl_python.api.prompt import EngineRequest, PromptBuilder
from djl_python.api.sampling import requested_knobs, sampling_params, with_knob_fields
from djl_python.api.structured import ResponseFormat, StructuredOutputs, one_constraint
from djl_python.api.tools import ToolChoice, ToolDefinition, ToolPlan, plan_tools
from djl_python.engine.request import Constraint, InvalidRequest, SamplingParams

UNLIMITED_TOKENS = 2**31 - 1
OPENAI_DEFAULTS: Mapping[str, Any] = {"temperature": 1.0}  # OpenAI's: unset temperature samples


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class StreamOptions(_Body):
    include_usage: bool = False


class _Common(with_knob_fields("_OpenAIKnobs", _Body)):  # type: ignore[misc]
    """Fields both endpoints share: every sampling knob (``temperature``, ``top_p`` and the
    vLLM-style ``top_k``, ``min_p``, ``repetition_penalty``...), plus ``ignore_eos`` and the rest."""

    model: Optional[str] = None
    n: Optional[int] = None
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    stop: Optional[Union[str, FailFastList[str]]] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    seed: Optional[int] = None
    logit_bias: Optional[dict[str, float]] = None
    ignore_eos: bool = False
    min_tokens: int = 0
    skip_special_tokens: bool = True
    stop_token_ids: Optional[FailFastList[int]] = None  # vLLM's: generation ends on any of these ids
    response_format: Optional[ResponseFormat] = None
    structured_outputs: Optional[StructuredOutputs] = None  # vLLM's: json, regex, choice, grammar, json_object
    # Accepted, no effect: nothing is stored, there are no accounts or tiers to bill.
    user: Optional[str] = None
    store: Optional[bool] = None
    metadata: Optional[dict[str, str]] = None
    service_tier: Optional[Literal["auto", "default", "flex", "scale", "priority"]] = None

    def _check_common(self) -> None:
        if self.n not in (None, 1):
            raise InvalidRequest("n", f"only n=1 is supported, got {self.n}")
        if self.logit_bias:
            raise InvalidRequest("logit_bias", "logit_bias is not supported")
        if self.stream_options is not None and not self.stream:
            raise InvalidRequest("stream_options", "only allowed when stream=true")

    def output_constraint(self) -> Optional[Constraint]:
        """The constraint ``response_format`` or ``structured_outputs`` asks for (at most one of them)."""
        return one_constraint(
            ("response_format", self.response_format.constraint() if self.response_format else None),
            ("structured_outputs", self.structured_outputs.constraint() if self.structured_outputs else None))

    def _params(self, model_defaults: Mapping[str, Any], max_tokens: Optional[int], max_field: str,
                logprobs: bool, top_logprobs: int, top_field: str,
                constraint: Optional[Constraint] = None) -> SamplingParams:
        if max_tokens is not None and max_tokens <= 0:
            raise InvalidRequest(max_field, f"must be a positive integer, got {max_tokens}")
        request = requested_knobs(self)
        if request["top_k"] == -1:
            request["top_k"] = 0  # vLLM: -1 disables top-k (0 does here)
        return sampling_params(
            request, model_defaults, api_defaults=OPENAI_DEFAULTS,
            do_sample=lambda knobs: knobs["temperature"] > 0,
            names={"max_new_tokens": max_field, "top_logprobs": top_field},
            max_new_tokens=max_tokens if max_tokens is not None else UNLIMITED_TOKENS,
            presence_penalty=self.presence_penalty or 0.0, frequency_penalty=self.frequency_penalty or 0.0,
            seed=self.seed, stop=(self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ()),
            stop_token_ids=tuple(self.stop_token_ids or ()), ignore_eos=self.ignore_eos,
            logprobs=logprobs, top_logprobs=top_logprobs,
            min_tokens=self.min_tokens, skip_special_tokens=self.skip_special_tokens, constraint=constraint,
        )

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


MAX_PROMPTS = 16  # prompts in one completions request (each takes a slot or a place in the queue)


class CompletionRequest(_Common):
    """``POST /v1/completions``: a prompt (a string or token ids) or a list of them, one choice each."""

    prompt: Union[str, FailFastList[str], FailFastList[int], FailFastList[FailFastList[int]]]
    max_tokens: Optional[int] = 16  # OpenAI's default for legacy completions
    logprobs: Optional[int] = Field(default=None, ge=0, le=20)
    echo: bool = False
    suffix: Optional[str] = None
    best_of: Optional[int] = None

    def prompts(self) -> list[Union[str, list[int]]]:
        """Each prompt's text or token ids (``choices[i]`` answers ``prompts()[i]``)."""
        p = self.prompt
        many = p if isinstance(p, list) and p and isinstance(p[0], (str, list)) else [p]
        if len(many) > MAX_PROMPTS:
            raise InvalidRequest("prompt", f"at most {MAX_PROMPTS} prompts per request, got {len(many)}")
        for i, one in enumerate(many):
            if not one:
                raise InvalidRequest("prompt" if len(many) == 1 else f"prompt.{i}", "must not be empty")
        return many

    def to_sampling_params(self, model_defaults: Mapping[str, Any]) -> SamplingParams:
        """This request's parameters: request > the model's ``model_defaults`` > OpenAI's defaults."""
        self._check_common()
        if self.best_of not in (None, 1):
            raise InvalidRequest("best_of", f"best_of is not supported, got {self.best_of}")
        if self.echo and self.logprobs is not None:
            raise InvalidRequest("echo", "echo with logprobs is not supported (no prompt log-probs)")
        if self.suffix:
            raise InvalidRequest("suffix", "suffix is not supported")
        return self._params(model_defaults, self.max_tokens, "max_tokens", self.logprobs is not None,
                            self.logprobs or 0, "logprobs", self.output_constraint())

    def to_engine(self, prompts: PromptBuilder) -> list[EngineRequest]:
        """One engine request per prompt, all with the same sampling parameters."""
        params = self.to_sampling_params(prompts.model_defaults)
        return [prompts.build(one, params) for one in self.prompts()]

    def echo_text(self, request: EngineRequest, prompts: PromptBuilder) -> str:
        """What leads the completion's text: the prompt with ``echo``, else nothing."""
        if not self.echo:
            return ""
        return request.prompt_text or prompts.decode(request.prompt_ids)

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs is not None


class ChatCompletionRequest(_Common):
    """``POST /v1/chat/completions``; also the chat body of LMI (see the module docstring)."""

    messages: FailFastList[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    logprobs: Optional[bool] = False
    top_logprobs: Optional[int] = Field(default=None, ge=0, le=20)
    tools: Optional[FailFastList[ToolDefinition]] = None
    tool_choice: Optional[ToolChoice] = None
    parallel_tool_calls: Optional[bool] = None
    tool_prompt: Optional[str] = None  # TGI's (its Python client sends null); refused when set

    def tool_plan(self, tool_parser: Optional[str]) -> ToolPlan:
        """What the tools ask for (``djl_python.api.tools``); ``tool_parser`` is the server's, or None
        when ``enable_auto_tool_choice`` is off."""
        return plan_tools(self.tools, self.tool_choice, self.parallel_tool_calls, tool_parser)

    def to_sampling_params(self, model_defaults: Mapping[str, Any], tool_parser: Optional[str] = None) -> SamplingParams:
        """This request's parameters: request > the model's ``model_defaults`` > OpenAI's defaults."""
        self._check_common()
        plan = self.tool_plan(tool_parser)
        output = self.output_constraint()
        forced = plan.constraint()
        if output is not None and forced is not None:  # as vLLM: not with a forced call (TGI: never with tools)
            raise InvalidRequest("response_format" if self.response_format else "structured_outputs",
                                 f"cannot be combined with tool_choice {plan.mode!r}: the call's grammar already "
                                 "decides the output")
        if self.tool_prompt is not None:
            raise InvalidRequest("tool_prompt", "TGI's tool prompt is not supported; the chat template renders the tools")
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest("top_logprobs", "requires logprobs=true")
        if self.max_completion_tokens is not None:
            max_tokens, max_field = self.max_completion_tokens, "max_completion_tokens"
        else:
            max_tokens, max_field = self.max_tokens, "max_tokens"
        params = self._params(model_defaults, max_tokens, max_field, bool(self.logprobs), self.top_logprobs or 0,
                              "top_logprobs", output or forced)
        if plan.mode == "auto" and plan.parser == "hermes" and params.skip_special_tokens:
            # <tool_call> is a special token in many tokenizers (Qwen): keep its text to read the calls.
            params = dataclasses.replace(params, skip_special_tokens=False)
        return params

    def to_engine(self, prompts: PromptBuilder) -> EngineRequest:
        params = self.to_sampling_params(prompts.model_defaults, prompts.tool_parser)
        return prompts.build(self.messages, params, tools=self.tool_plan(prompts.tool_parser).template_tools())

    @property
    def wants_logprobs(self) -> bool:
        return bool(self.logprobs)
