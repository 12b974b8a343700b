"""Prefix caching: the index (``engine/prefix_cache.py``) and, on tiny real models, greedy output
identical with and without the cache for every architecture (the native forward with the CPU
kernels and with torch ops, the Hugging Face forward for bloom and as the fallback), with decode rows and joining
prompts in one step, and with fewer cached rows than conversations (eviction)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from djl_python.backends.pytorch.backend import PyTorchBackend
from djl_python.engine import Engine, SamplingParams
from djl_python.engine.prefix_cache import PrefixCache
from tests.models import FORWARDS, forward_options


def test_lookup_finds_the_longest_whole_block_prefix_and_leaves_a_token_to_compute() -> None:
    cache = PrefixCache(rows=2, block=4)
    assert cache.store(list(range(10))) == (0, 8)  # whole blocks only
    assert cache.lookup(list(range(8)) + [99]) == (0, 8)
    assert cache.lookup(list(range(8))) == (0, 4)  # a prompt of exactly 8: one token must be computed
    assert cache.lookup([0, 1, 2, 9, 4, 5]) is None  # differs inside the first block
    assert cache.lookup(list(range(6)) + [7, 7, 7]) == (0, 4)
    assert cache.store([1, 2, 3]) is None  # less than a block
    assert cache.store(list(range(8))) is None  # already held by row 0
    assert (cache.hit_tokens, cache.prompt_tokens) == (16, 9 + 8 + 6 + 9)


def test_least_recently_used_row_is_overwritten_and_its_prefixes_forgotten() -> None:
    cache = PrefixCache(rows=2, block=2)
    a, b, c = [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]
    assert cache.store(a)[0] == 0 and cache.store(b)[0] == 1
    assert cache.lookup(a + [5]) == (0, 4)  # a is now the most recent
    assert cache.store(c) == (1, 4)  # b's row goes
    assert cache.lookup(b + [5]) is None and cache.lookup(c + [5]) == (1, 4)
    cache.forget(1)
    assert cache.lookup(c + [5]) is None
    assert cache.store(b) == (1, 4)  # a forgotten row is the first reused


def test_a_longer_run_overwrites_the_row_holding_its_prefix_not_the_least_recent_one() -> None:
    """A request's end extends the row its prefill saved (or the row its prompt hit), so one
    conversation holds one row and the other rows stay."""
    cache = PrefixCache(rows=2, block=2)
    a, b = [1, 1, 1, 1], [2, 2, 2, 2]
    assert cache.store(a) == (0, 4) and cache.store(b) == (1, 4)
    assert cache.lookup(b + [5]) == (1, 4)  # row 0 is now the least recently used
    assert cache.store(b + [3, 3]) == (1, 6)  # supersedes row 1, not the LRU row 0
    assert cache.lookup(a + [5]) == (0, 4) and cache.lookup(b + [3, 3, 5]) == (1, 6)
    assert cache.store([2, 2, 9, 9]) == (0, 4)  # shares a block with row 1 but is no extension: LRU


def test_tentative_saves_of_prompts_that_share_nothing_cycle_through_one_row() -> None:
    """A prompt saved when its prefill completes does not count as a use: it takes the least recently
    used row and leaves it the next to be reused, until a lookup hits it."""
    cache = PrefixCache(rows=3, block=2)
    a, b, c, d, e = ([k] * 4 for k in (1, 2, 3, 4, 5))
    assert cache.store(a)[0] == 0 and cache.store(b)[0] == 1
    assert cache.store(c, tentative=True) == (2, 4)
    assert cache.store(d, tentative=True) == (2, 4)  # c's row again, not a's or b's
    assert cache.lookup(a + [9]) == (0, 4) and cache.lookup(b + [9]) == (1, 4)
    assert cache.lookup(d + [9]) == (2, 4)  # a hit makes it a used row
    assert cache.store(e, tentative=True) == (0, 4)  # now a's row is the least recently used
    assert cache.store(b + [7, 7], tentative=True) == (1, 6)  # supersedes b's row, which keeps its place
    assert cache.store(c)[0] == 0  # e's tentative row stayed first


def test_a_hash_collision_costs_a_miss_never_a_wrong_prefix(monkeypatch) -> None:
    cache = PrefixCache(rows=1, block=2)
    monkeypatch.setattr(cache, "_chain", lambda tokens: [7] * (len(tokens) // 2))  # every block collides
    cache.store([1, 2, 3, 4])
    assert cache.lookup([1, 2, 9, 9, 5]) == (0, 2)
    assert cache.lookup([5, 6, 3, 4, 5]) is None


def conversations(engine: Engine, turns: int, people: int, max_new: int = 10) -> list[list[int]]:
    """Each of ``people`` chats ``turns`` times over a shared system prompt; every turn's prompt is
    the whole history (what a chat template renders) plus a new question."""
    system = [(7 * i) % 400 + 20 for i in range(70)]
    history = {p: system + [450 + p] for p in range(people)}
    out = []
    for turn in range(turns):
        results = engine.generate([history[p] for p in range(people)],
                                  SamplingParams(max_new_tokens=max_new, ignore_eos=True))
        for p, result in enumerate(results):
            out.append(result.token_ids)
            history[p] = history[p] + result.token_ids + [460 + turn, 461 + p]
    return out


@pytest.mark.parametrize("arch,forward", FORWARDS)
def test_greedy_output_is_the_same_with_and_without_the_cache(tiny_model_factory, arch: str, forward: str) -> None:
    folder = tiny_model_factory(arch)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))

    def engine(rows: int) -> Engine:
        # A prefill budget under two prompts: a turn's prompts join over several steps, and the later
        # ones of the first turn reuse the system prompt saved when the first one's prefill completed.
        return Engine(PyTorchBackend.load(folder, max_slots=3, n_positions=256, prefix_cache_rows=rows,
                                          **forward_options(forward)), tokenizer, max_prefill_tokens=100)

    plain = conversations(engine(0), turns=3, people=3)
    cached_engine = engine(3)
    assert conversations(cached_engine, turns=3, people=3) == plain
    assert cached_engine.prefix_cache.hit_rate > 0.5  # turns 2 and 3 reuse the history
    few_rows = engine(1)  # three conversations, one cached row: most lookups miss, none is wrong
    assert conversations(few_rows, turns=3, people=3) == plain


def test_cached_prompts_join_a_step_beside_running_decodes(tiny_llama: Path) -> None:
    """A cached prompt admitted while other requests decode (one forward for both parts)."""
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    shared = [(5 * i) % 300 + 10 for i in range(48)]
    prompts = [shared + [j] for j in range(4)]

    def run(rows: int) -> list[list[int]]:
        engine = Engine(PyTorchBackend.load(tiny_llama, max_slots=4, n_positions=256, prefix_cache_rows=rows),
                        tokenizer)
        engine.generate([prompts[0][:-1] + [99]], SamplingParams(max_new_tokens=4, ignore_eos=True))  # fills a row
        first = engine.add_request(prompts[0], SamplingParams(max_new_tokens=20, ignore_eos=True))
        engine.step()
        engine.step()  # the first request is decoding now
        later = [engine.add_request(p, SamplingParams(max_new_tokens=8, ignore_eos=True)) for p in prompts[1:]]
        tokens: dict[str, list[int]] = {rid: [] for rid in [first, *later]}
        while engine.has_unfinished():
            for out in engine.step():
                tokens[out.request_id] += out.token_ids
        if rows:
            assert engine.prefix_cache.hit_tokens >= 4 * 48
        return [tokens[rid] for rid in [first, *later]]

    assert run(2) == run(0)


def test_a_cached_prompt_is_charged_only_what_is_left_to_compute(tiny_llama: Path) -> None:
    """With a 64-token prefill budget, three 60-token prompts whose first 48 tokens are cached are
    admitted in one step (12 tokens each to compute); without the cache, one per step."""
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    shared = [(3 * i) % 300 + 10 for i in range(48)]
    prompts = [shared + [200 + j] * 12 for j in range(3)]

    def admitted_in_first_step(rows: int) -> int:
        engine = Engine(PyTorchBackend.load(tiny_llama, max_slots=4, n_positions=128, prefix_cache_rows=rows),
                        tokenizer, max_prefill_tokens=64)
        engine.generate([shared + [7]], SamplingParams(max_new_tokens=2, ignore_eos=True))  # caches 48 tokens
        for prompt in prompts:
            engine.add_request(prompt, SamplingParams(max_new_tokens=2, ignore_eos=True))
        return len(engine.step())

    assert admitted_in_first_step(2) == 3
    assert admitted_in_first_step(0) == 1


def test_requests_arriving_together_share_a_prefix_before_any_of_them_ends(tiny_llama: Path) -> None:
    """A prompt is saved in the step its prefill completes: prompts of the same burst admitted in
    later steps copy its shared blocks while it is still decoding, and decode exactly as without."""
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    shared = [(11 * i) % 300 + 10 for i in range(64)]
    prompts = [shared + [300 + j, 301 + j] for j in range(4)]

    def run(rows: int) -> list[list[int]]:
        engine = Engine(PyTorchBackend.load(tiny_llama, max_slots=4, n_positions=256, prefix_cache_rows=rows),
                        tokenizer, max_prefill_tokens=80)
        ids = [engine.add_request(p, SamplingParams(max_new_tokens=24, ignore_eos=True)) for p in prompts]
        tokens: dict[str, list[int]] = {rid: [] for rid in ids}
        ended, hits_before_any_end = False, 0
        while engine.has_unfinished():
            outputs = engine.step()
            ended = ended or any(out.finished for out in outputs)
            if rows and not ended:
                hits_before_any_end = engine.prefix_cache.hit_tokens
            for out in outputs:
                tokens[out.request_id] += out.token_ids
        if rows:  # the first prompt's 64 shared tokens, copied by at least the last two prompts
            assert hits_before_any_end >= 2 * 64
        return [tokens[rid] for rid in ids]

    assert run(4) == run(0)
