"""Chunked prefill on tiny real models: greedy output identical with and without it on every
forward the PyTorch backend has (prompts longer than the budget, prompts joining running
decodes, with the prefix cache too), running streams decoding every step while a long prompt
fills in chunks, and the option reaching the engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from djl_python.backends.pytorch.backend import PyTorchBackend
from djl_python.config import load_config
from djl_python.engine import Engine, SamplingParams
from tests.models import FORWARDS, forward_options

PROMPTS = [[(13 * i + j) % 400 + 20 for i in range(n)] for j, n in enumerate((5, 37, 70, 100, 23))]


def staggered(engine: Engine) -> list[list[int]]:
    """Two requests start, then three more join while they decode: every prefill runs beside decodes."""
    params = SamplingParams(max_new_tokens=12, ignore_eos=True)
    ids = [engine.add_request(p, params) for p in PROMPTS[:2]]
    tokens: dict[str, list[int]] = {rid: [] for rid in ids}
    for step in range(40):
        if step == 3:
            ids += [engine.add_request(p, params) for p in PROMPTS[2:]]
            tokens.update({rid: [] for rid in ids[2:]})
        for out in engine.step():
            tokens[out.request_id] += out.token_ids
        if step > 3 and not engine.has_unfinished():
            break
    return [tokens[rid] for rid in ids]


@pytest.mark.parametrize("arch,forward", FORWARDS)
def test_greedy_output_is_the_same_with_and_without_chunking(tiny_model_factory, arch: str, forward: str) -> None:
    folder = tiny_model_factory(arch)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))

    def engine(chunked: bool, budget: int | None, cache_rows: int = 0) -> Engine:
        backend = PyTorchBackend.load(folder, max_slots=4, n_positions=256, prefix_cache_rows=cache_rows,
                                      **forward_options(forward))
        return Engine(backend, tokenizer, max_prefill_tokens=budget, chunked_prefill=chunked)

    plain = staggered(engine(False, None))
    chunked = engine(True, 16)
    assert staggered(chunked) == plain
    assert chunked.scheduler.chunked
    # The same prompts again over the prefix cache, in chunks: cached runs, then chunks after them.
    cached = engine(True, 16, cache_rows=2)
    staggered(cached)
    assert staggered(cached) == plain and cached.prefix_cache.hit_tokens > 0


def test_running_streams_decode_every_step_while_a_long_prompt_fills_in_chunks(tiny_llama: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    engine = Engine(PyTorchBackend.load(tiny_llama, max_slots=2, n_positions=256), tokenizer, max_prefill_tokens=16)
    running = engine.add_request([5, 6, 7], SamplingParams(max_new_tokens=30, ignore_eos=True))
    engine.step()
    long = engine.add_request(list(range(20, 120)), SamplingParams(max_new_tokens=4, ignore_eos=True))
    got = []
    for _ in range(7):
        got.append(sorted(out.request_id for out in engine.step()))
    # The running stream gets a token every step; the 100-token prompt's first token comes from the
    # seventh 16-token chunk.
    assert got == [[running]] * 6 + [sorted([running, long])]


def test_the_option_reaches_the_engine(tiny_llama: Path) -> None:
    from djl_python.loader import load_engine

    props = {"device": "cpu", "max_rolling_batch_size": "2", "n_positions": "64"}
    assert load_engine(load_config(tiny_llama, properties=props, env={})).scheduler.chunked
    off = load_engine(load_config(tiny_llama, properties={**props, "enable_chunked_prefill": "false"}, env={}))
    assert not off.scheduler.chunked
