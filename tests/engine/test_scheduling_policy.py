"""The admission order on tiny real models: greedy output is the same whichever order a burst is
admitted in (arrival, or shortest prompt first), on every forward the PyTorch backend has, and
shortest first gives the short prompts their first tokens first."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from djl_python.backends.pytorch.backend import PyTorchBackend
from djl_python.engine import Engine, SamplingParams
from djl_python.engine.scheduler import SchedulingPolicy
from tests.models import FORWARDS, forward_options

# Arrival order; lengths 70, 5, 100, 23, 37, 9: the longest come early.
PROMPTS = [[(13 * i + j) % 400 + 20 for i in range(n)] for j, n in enumerate((70, 5, 100, 23, 37, 9))]


def burst(engine: Engine) -> tuple[list[list[int]], list[int]]:
    """Every prompt at once into fewer slots than prompts; each request's greedy tokens, and the
    order (indices into PROMPTS) in which requests got their first token."""
    params = SamplingParams(max_new_tokens=6, ignore_eos=True)
    ids = [engine.add_request(p, params) for p in PROMPTS]
    tokens: dict[str, list[int]] = {rid: [] for rid in ids}
    first: list[int] = []
    while engine.has_unfinished():
        for out in engine.step():
            if not tokens[out.request_id]:
                first.append(ids.index(out.request_id))
            tokens[out.request_id] += out.token_ids
    return [tokens[rid] for rid in ids], first


@pytest.mark.parametrize("arch,forward", FORWARDS)
def test_greedy_output_is_the_same_in_either_order(tiny_model_factory, arch: str, forward: str) -> None:
    folder = tiny_model_factory(arch)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))

    def engine(policy: SchedulingPolicy) -> Engine:
        backend = PyTorchBackend.load(folder, max_slots=3, n_positions=256, prefix_cache_rows=0, **forward_options(forward))
        return Engine(backend, tokenizer, max_prefill_tokens=32, scheduling_policy=policy)

    arrival, arrival_first = burst(engine("fcfs"))
    shortest, shortest_first = burst(engine("shortest_prompt_first"))
    assert shortest == arrival
    assert sorted(arrival_first[:3]) == [0, 1, 2]  # the three slots go to the first three arrivals
    # Shortest first: 5, 9 and 23 tokens take the three slots, so all three first tokens come
    # before the 70- and 100-token prompts start.
    assert sorted(shortest_first[:3]) == [1, 3, 5]
