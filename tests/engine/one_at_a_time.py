"""Speculative decoding serves one running sequence: the speculation tests run their prompts one
after another through an engine and compare outputs and step counts with plain decoding."""

from __future__ import annotations

from collections.abc import Sequence

from djl_python.engine import Engine, SamplingParams


def one_at_a_time(engine: Engine, prompts: Sequence[list[int]], params: SamplingParams) -> tuple[list[list[int]], int]:
    """Each prompt alone, to its end; the outputs in order and the engine steps taken in all."""
    steps, out = 0, []
    for prompt in prompts:
        rid = engine.add_request(prompt, params)
        tokens: list[int] = []
        while engine.has_unfinished():
            steps += 1
            tokens += [t for o in engine.step() if o.request_id == rid for t in o.token_ids]
        out.append(tokens)
    return out, steps
