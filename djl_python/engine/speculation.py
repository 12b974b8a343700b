"""Greedy acceptance of speculated tokens, and which requests a speculative step may serve.

A speculative step (``Backend.speculate``) gives the draft's ``k - 1`` proposals and the
model's ``k`` rows of logits: row ``i`` predicts the token after input ``i`` (input 0 is the
request's last token, input ``i`` its ``i``-th proposal). Greedy acceptance, as LMI's
``LMIGreedyTokenAcceptor`` (djl-serving v0.28.0 ``transformers_neuronx_scheduler/speculation.py:96-128``)
does: the model's argmax at each row, kept up to and including the first row whose argmax differs
from the proposal fed after it. Every kept token is the model's own greedy choice given the kept
tokens before it, so the output equals plain greedy decoding.

Only requests whose next token is the plain argmax qualify: greedy, no penalties, no log-probs, no
``min_tokens``, no output constraint (those change or report the distribution, which only the sampler
does). No torch.
"""

from __future__ import annotations

from typing import Sequence

from djl_python.engine.request import SamplingParams


def accept_greedy(proposals: Sequence[int], argmax: Sequence[int]) -> list[int]:
    """The kept tokens: ``argmax[: i + 1]`` for the first ``i`` where ``proposals[i] != argmax[i]``,
    else all of ``argmax`` (``len(argmax) == len(proposals) + 1``)."""
    if len(argmax) != len(proposals) + 1:
        raise ValueError(f"{len(argmax)} scored positions for {len(proposals)} proposals")
    for i, proposal in enumerate(proposals):
        if proposal != argmax[i]:
            return list(argmax[: i + 1])
    return list(argmax)


def plain_greedy(params: SamplingParams) -> bool:
    """Whether a request's next token is the plain argmax of its logits (an output constraint aside):
    greedy, no penalties, no log-probs, no ``min_tokens``."""
    return (params.greedy and not params.logprobs and not params.top_logprobs and params.min_tokens == 0
            and params.repetition_penalty in (None, 1.0) and not params.presence_penalty
            and not params.frequency_penalty)


def speculable(params: SamplingParams) -> bool:
    """Whether a request's next token is the plain argmax of the model's logits."""
    return plain_greedy(params) and params.constraint is None
