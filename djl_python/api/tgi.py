"""Text Generation Inference: request body, translation and renderer.

Field names and meanings are TGI's. Like TGI, any sampling warper
(``temperature`` other than 1, ``top_k``, ``top_p``, ``typical_p``) turns
sampling on even when ``do_sample`` is false; a sampling request without a seed
gets a random one so that ``details.seed`` can report it. Options we do not
implement are accepted only at their neutral value (``best_of`` 1,
``watermark`` false, ``adapter_id`` null); unknown fields are rejected.
``grammar`` constrains the output (``djl_python.api.structured.TgiGrammar``).

Responses: ``{"generated_text", "details"?}`` (a one-element list on TGI's
compat route ``/``); stream events ``{"index", "token": {id, text, logprob,
special}, "top_tokens"?, "generated_text": null | str, "details": null | {...}}``
where only the last event carries ``generated_text`` and ``details``. As in
TGI's incremental decoding a token's text is what it added to the output (the
step's text delta goes to its last token), so token texts concatenate to
``generated_text``. A failure after the stream started is an ``{"error",
"error_type"}`` event. Prompt log-probs are not computed: ``details.prefill``
lists the prompt tokens with ``logprob: null``.
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field

from djl_python.api import finish
from djl_python.api.body import FailFastList
from djl_python.api.errors import ApiError
from djl_python.api.prompt import EngineRequest, PromptBuilder
from djl_python.api.render import dumps, generation_failed, sse
from djl_python.api.sampling import requested_knobs, sampling_params, with_knob_fields
from djl_python.api.structured import TgiGrammar
from djl_python.engine.request import InvalidRequest, RequestOutput, SamplingParams

TGI_DEFAULT_MAX_NEW_TOKENS = 100
TGI_CLIENT_MODEL = "tgi"  # the ``model`` TGI's clients send on its chat route (TGI ignores it)
ERROR_TYPES = {400: "validation", 413: "validation", 503: "overloaded", 504: "timeout"}


def error_type(err: ApiError) -> str:
    """TGI's ``error_type``; a permanent 503 (the model failed to load) is not "overloaded"."""
    return "unavailable" if err.kind == "unavailable" else ERROR_TYPES.get(err.status, "generation")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


WARPERS = ("temperature", "top_k", "top_p", "typical_p")  # TGI's logits warpers: any one turns sampling on


class TgiParameters(with_knob_fields("_TgiKnobs", _Body)):  # type: ignore[misc]
    """TGI's ``parameters``; every sampling knob (``temperature``, ``top_k``, ``top_p``,
    ``typical_p``, ``repetition_penalty``, and ``min_p`` as an extension) is a field."""

    do_sample: bool = False
    max_new_tokens: Optional[int] = None
    frequency_penalty: Optional[float] = None
    return_full_text: Optional[bool] = False
    stop: FailFastList[str] = Field(default_factory=list)
    seed: Optional[int] = None
    truncate: Optional[int] = None
    best_of: Optional[int] = None
    watermark: bool = False
    details: bool = False
    decoder_input_details: bool = False
    top_n_tokens: Optional[int] = None
    grammar: Optional[TgiGrammar] = None
    adapter_id: Optional[str] = None

    @property
    def sampling(self) -> bool:
        """TGI's rule, on what the request wrote: ``do_sample``, or any warper (a temperature of 1 is none)."""
        warpers = (self.temperature not in (None, 1.0)) or any(  # type: ignore[attr-defined]
            getattr(self, name) is not None for name in WARPERS[1:])
        return self.do_sample or warpers


class TgiRequest(_Body):
    inputs: str
    parameters: TgiParameters = Field(default_factory=TgiParameters)
    stream: bool = False

    def to_sampling_params(self, model_defaults: Mapping[str, Any]) -> SamplingParams:
        """This request's parameters: request > the model's ``model_defaults`` (TGI has no API defaults
        for the knobs); whether it samples follows TGI's rule on what the request wrote."""
        p = self.parameters
        if not self.inputs:
            raise InvalidRequest("inputs", "must not be empty")
        for name, neutral in (("best_of", (None, 1)), ("watermark", (False,)), ("adapter_id", (None,))):
            if getattr(p, name) not in neutral:
                raise InvalidRequest(f"parameters.{name}", f"{name} is not supported")
        if p.max_new_tokens is not None and p.max_new_tokens <= 0:
            raise InvalidRequest("parameters.max_new_tokens", f"must be a positive integer, got {p.max_new_tokens}")
        if p.truncate is not None and p.truncate <= 0:
            raise InvalidRequest("parameters.truncate", f"must be a positive integer, got {p.truncate}")
        sampling = p.sampling
        seed = p.seed if p.seed is not None or not sampling else random.getrandbits(63)
        return sampling_params(
            requested_knobs(p), model_defaults, do_sample=sampling, prefix="parameters.",
            names={"top_logprobs": "top_n_tokens"},
            max_new_tokens=p.max_new_tokens or TGI_DEFAULT_MAX_NEW_TOKENS,
            frequency_penalty=p.frequency_penalty or 0.0, seed=seed, stop=tuple(p.stop),
            logprobs=True,  # every TGI token carries its logprob
            top_logprobs=p.top_n_tokens or 0,
            constraint=p.grammar.constraint() if p.grammar is not None else None,
        )

    def to_engine(self, prompts: PromptBuilder) -> EngineRequest:
        return prompts.build(self.inputs, self.to_sampling_params(prompts.model_defaults),
                             truncate=self.parameters.truncate)


def token_object(token_id: int, text: str, logprob: Optional[float], special: bool) -> dict[str, Any]:
    """TGI's ``Token``; also LMI's token shape under ``tgi_compat``."""
    return {"id": token_id, "text": text, "logprob": logprob, "special": special}


def error_object(err: ApiError) -> dict[str, Any]:
    """TGI's error body ``{"error", "error_type"}``."""
    return {"error": err.text, "error_type": error_type(err)}


class TgiRenderer:
    """Renders one TGI request; see ``djl_python.api.render``."""

    def __init__(self, body: TgiRequest, request: EngineRequest, prompts: PromptBuilder, *,
                 stream: bool, as_list: bool = False) -> None:
        self.p = body.parameters
        self.prefix = body.inputs if self.p.return_full_text else ""
        self.special = prompts.special_ids
        self.prompt_ids = request.prompt_ids
        self.prefill_texts = prompts.token_texts(request.prompt_ids) if self.p.decoder_input_details else []
        self.seed = request.params.seed
        self.stream = stream
        self.as_list = as_list
        self.content_type = "text/event-stream" if stream else "application/json"
        self.done = False
        self._index = 0
        self._text = self.prefix

    def _token(self, token_id: int, logprob: Optional[float], text: str) -> dict[str, Any]:
        return token_object(token_id, text, logprob, token_id in self.special)

    def tokens(self, out: RequestOutput) -> list[tuple[dict[str, Any], Optional[list[dict[str, Any]]]]]:
        """The step's tokens with their top alternatives (the step's delta on its last token)."""
        result = []
        n = len(out.token_ids)
        for i, tid in enumerate(out.token_ids):
            lp = out.logprobs[i] if i < len(out.logprobs) else None
            top = None
            if self.p.top_n_tokens and i < len(out.top_logprobs):
                names = out.top_logprob_texts[i]
                top = [self._token(t, v, names[t]) for t, v in out.top_logprobs[i].items()]
            result.append((self._token(tid, lp, out.text if i == n - 1 else ""), top))
        return result

    def details(self, last: RequestOutput, stream: bool) -> dict[str, Any]:
        d: dict[str, Any] = {"finish_reason": finish.tgi(last.finish_reason),
                             "generated_tokens": last.generated_tokens, "seed": self.seed}
        if stream:
            d["input_length"] = len(self.prompt_ids)
        return d

    def feed(self, out: RequestOutput) -> str:
        self._text += out.text
        if out.finish_reason == "error" or (out.finished and not out.token_ids):
            self.done = True
            return sse({"error": out.error or f"request ended: {out.finish_reason}", "error_type": "generation"})
        self.done = out.finished
        events = []
        pairs = self.tokens(out)
        for i, (tok, top) in enumerate(pairs):
            self._index += 1
            final = out.finished and i == len(pairs) - 1
            event: dict[str, Any] = {"index": self._index, "token": tok,
                                     "generated_text": self._text if final else None,
                                     "details": self.details(out, stream=True) if final else None}
            if top is not None:
                event["top_tokens"] = top
            events.append(sse(event))
        return "".join(events)

    def fail(self, error: ApiError) -> str:
        self.done = True
        return sse({"error": error.message, "error_type": error_type(error)})

    def end(self) -> str:
        return ""

    def whole(self, outputs: Sequence[RequestOutput]) -> tuple[str, int]:
        failed = generation_failed(outputs)
        if failed is not None:
            raise failed
        result: dict[str, Any] = {"generated_text": self.prefix + "".join(out.text for out in outputs)}
        if self.p.details:
            pairs = [pair for out in outputs for pair in self.tokens(out)]
            d = self.details(outputs[-1], stream=False)
            d["prefill"] = [{"id": t, "text": x, "logprob": None}
                            for t, x in zip(self.prompt_ids, self.prefill_texts)]
            d["tokens"] = [tok for tok, _ in pairs]
            if self.p.top_n_tokens:
                d["top_tokens"] = [top or [] for _, top in pairs]
            result["details"] = d
        return dumps([result] if self.as_list else result), 200
