"""Shared by the equivalence tests: requests joining mid-flight vs each request run alone.

``run_staggered`` adds prompts to an engine at given steps (so requests join while
others are decoding, and slots are released and reused); ``generate_alone`` is the
oracle, ``transformers`` greedy ``generate`` on one prompt with no batch neighbours.
"""

from __future__ import annotations

from typing import Sequence

import torch

from djl_python.engine import Engine, SamplingParams


@torch.no_grad()
def generate_alone(model, prompt_ids: list[int], max_new_tokens: int, **generate_kwargs) -> list[int]:
    """Greedy tokens ``model.generate`` produces for ``prompt_ids`` alone."""
    input_ids = torch.tensor([prompt_ids])
    out = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        **generate_kwargs,
    )
    return out[0, len(prompt_ids) :].tolist()


def greedy_references(model_dir, prompts: dict[str, tuple[str, int]]) -> dict[str, tuple[list[int], str, str]]:
    """For each named ``(prompt, max_new_tokens)``: the ids ``generate_alone`` gives on the model in
    ``model_dir``, their text, and the prompt's text followed by them (special tokens skipped)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    out = {}
    for name, (prompt, n) in prompts.items():
        ids = tok.encode(prompt)
        gen = generate_alone(model, ids, n)
        out[name] = (gen, tok.decode(gen, skip_special_tokens=True), tok.decode(ids + gen, skip_special_tokens=True))
    return out


def run_staggered(
    engine: Engine, prompts: list[list[int]], params: SamplingParams, arrivals: Sequence[int]
) -> list[list[int]]:
    """Add ``prompts[i]`` at engine step ``arrivals[i]``; run to completion; tokens per prompt.

    ``arrivals`` is ascending and at least as long as ``prompts`` (extra steps are unused).
    """
    arrivals = list(arrivals)[: len(prompts)]
    if len(arrivals) < len(prompts) or arrivals != sorted(arrivals):
        raise ValueError("arrivals must give an ascending step for every prompt")
    ids: list[str] = []
    tokens: dict[str, list[int]] = {}
    step = 0
    while len(ids) < len(prompts) or engine.has_unfinished():
        while len(ids) < len(prompts) and arrivals[len(ids)] <= step:
            ids.append(engine.add_request(prompts[len(ids)], params))
        for out in engine.step():
            tokens.setdefault(out.request_id, []).extend(out.token_ids)
        step += 1
    return [tokens.get(i, []) for i in ids]
