"""Offline generation: run a list of prompts to completion on an ``Engine``, and its result type.

Offline use only: ``generate`` drives ``step`` itself until the engine is idle, so outputs of
requests added by anyone else meanwhile are consumed and dropped. The transports never call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union

from djl_python.engine.request import FinishReason, InvalidRequest, SamplingParams

if TYPE_CHECKING:
    from djl_python.engine.engine import Engine


@dataclass
class GenerationResult:
    """The whole result of one offline ``generate`` prompt."""

    text: str
    token_ids: list[int]
    finish_reason: Optional[FinishReason]
    logprobs: list[float] = field(default_factory=list)
    prompt_tokens: int = 0


def generate(engine: "Engine", prompts: Union[list[str], list[list[int]]],
             params: Union[SamplingParams, list[SamplingParams], None] = None) -> list[GenerationResult]:
    """Run ``prompts`` to completion (strings are tokenised with the engine's tokenizer).

    Offline use only: it drives ``step`` itself until the engine is idle, so the
    outputs of requests added by anyone else are consumed and dropped.
    Raises ``InvalidRequest`` for a prompt that cannot run; the prompts of the
    call queued before it are aborted.
    """
    params = params or SamplingParams()
    per_prompt = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
    if len(per_prompt) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(per_prompt)} SamplingParams")
    ids: list[str] = []
    try:
        for prompt, sp in zip(prompts, per_prompt):
            ids.append(engine.add_request(_prompt_ids(engine.tokenizer, prompt), sp))
    except InvalidRequest:
        for rid in ids:
            engine.abort(rid)
        raise
    results = {rid: GenerationResult("", [], None) for rid in ids}
    while engine.has_unfinished():
        for out in engine.step():
            result = results.get(out.request_id)
            if result is None:
                continue
            result.text += out.text
            result.token_ids += out.token_ids
            result.logprobs += out.logprobs
            result.prompt_tokens = out.prompt_tokens
            if out.finished:
                result.finish_reason = out.finish_reason
    return [results[rid] for rid in ids]


def _prompt_ids(tokenizer: Any, prompt: Union[str, list[int]]) -> list[int]:
    return tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
