"""Prompt-lookup (n-gram) speculative decoding on the PyTorch backend: the proposer, and greedy
output identical to plain decoding on the tiny models of every architecture (the native forward
with CPU kernels and with torch ops, the Hugging Face forward's extensions for bloom and as the
fallback), on
repetitive and non-repetitive prompts, with fewer forwards where the output repeats its input."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from djl_python.backends.pytorch.backend import PyTorchBackend
from djl_python.config import ConfigError, load_config
from djl_python.engine import Engine, SamplingParams
from djl_python.engine.ngram import propose
from tests.engine.one_at_a_time import one_at_a_time
from tests.models import FORWARDS, forward_options


def test_proposals_follow_the_latest_earlier_occurrence_of_the_longest_suffix() -> None:
    assert propose([1, 2, 3, 9, 1, 2, 3, 7, 1, 2, 3], k=3) == [7, 1, 2]  # the latest "1 2 3" is followed by 7
    assert propose([5, 6, 7, 5, 6], k=4) == [7, 5, 6]  # "5 6" recurs; the proposal runs to the end
    assert propose([1, 2, 3, 4], k=3) == []  # nothing recurs
    assert propose([4, 8, 4], k=2) == []  # by default a suffix of two tokens at least must recur
    assert propose([4, 8, 4], k=2, min_n=1) == [8, 4]


@pytest.mark.parametrize("arch,forward", FORWARDS)
def test_greedy_output_equals_plain_decoding(tiny_model_factory, arch: str, forward: str) -> None:
    folder = tiny_model_factory(arch)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    prompts = [[5, 6, 7, 8, 9] * 8, list(range(20, 60)), [3, 4] * 20 + list(range(100, 110))]
    params = SamplingParams(max_new_tokens=50, ignore_eos=True)

    verified = []

    def run(ngram: int) -> tuple[list[list[int]], int]:
        engine = Engine(PyTorchBackend.load(folder, max_slots=2, n_positions=256, **forward_options(forward)), tokenizer,
                        ngram_length=ngram)
        verify = engine.backend.verify
        engine.backend.verify = lambda *a: verified.append(a) or verify(*a)  # type: ignore[method-assign]
        return one_at_a_time(engine, prompts, params)

    plain, plain_steps = run(0)
    fast, fast_steps = run(5)
    assert fast == plain
    # The llama and mistral tiny models (seed 0) continue the repetitive prompts, so proposals were scored
    # and they took several tokens per step; another random model may never repeat itself (nothing to
    # propose), and then must not take more steps. tests/backends/test_row_continuation.py checks every forward's
    # verification against plain decoding directly.
    if arch in ("llama", "mistral"):
        assert verified and fast_steps < plain_steps
    assert fast_steps <= plain_steps


def test_sampled_and_concurrent_requests_decode_plainly(tiny_llama) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    engine = Engine(PyTorchBackend.load(tiny_llama, max_slots=2, n_positions=128), tokenizer, ngram_length=4)
    calls = []
    verify = engine.backend.verify
    engine.backend.verify = lambda *a: calls.append(a) or verify(*a)  # type: ignore[method-assign]
    engine.generate([[5, 6, 7] * 10], SamplingParams(max_new_tokens=20, ignore_eos=True, do_sample=True, seed=1))
    engine.generate([[5, 6, 7] * 10, [5, 6, 7] * 9], SamplingParams(max_new_tokens=6, ignore_eos=True))
    assert calls == []  # a sampled request, then two running at once: plain decode steps
    engine.generate([[5, 6, 7] * 10], SamplingParams(max_new_tokens=20, ignore_eos=True))
    assert calls and all(len(tokens) <= 4 for _, tokens, _ in calls)  # the lone greedy request speculated


def test_ngram_option_reaches_the_engine_and_needs_two_tokens(tiny_llama) -> None:
    from djl_python.loader import load_engine

    props = {"device": "cpu", "max_rolling_batch_size": "1", "n_positions": "64", "speculative_method": "ngram",
             "speculative_length": "4"}
    assert load_engine(load_config(tiny_llama, properties=props, env={})).ngram_length == 4
    with pytest.raises(ConfigError, match="speculative_length >= 2"):
        load_config(tiny_llama, properties={**props, "speculative_length": "1"}, env={})


def test_proposals_that_keep_missing_back_off(tiny_llama, monkeypatch) -> None:
    """Every proposal wrong: the output is still plain greedy decoding, and after the second miss the
    waits between proposals double (1, 2, 4, ...), so 60 tokens cost a handful of verifications."""
    from djl_python.engine import proposers

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    params = SamplingParams(max_new_tokens=60, ignore_eos=True)
    plain = Engine(PyTorchBackend.load(tiny_llama, max_slots=1, n_positions=128), tokenizer)
    expected = plain.generate([[5, 6, 7, 8]], params)[0].token_ids
    engine = Engine(PyTorchBackend.load(tiny_llama, max_slots=1, n_positions=128), tokenizer, ngram_length=4)
    vocab = engine.limits.vocab_size
    assert vocab - 1 not in expected  # so a proposal of that id always misses
    monkeypatch.setattr(proposers, "propose", lambda tokens, k: [vocab - 1] * k)
    calls = []
    verify = engine.backend.verify
    engine.backend.verify = lambda *a: calls.append(a) or verify(*a)  # type: ignore[method-assign]
    assert engine.generate([[5, 6, 7, 8]], params)[0].token_ids == expected
    assert 3 <= len(calls) <= 8  # waits 0, 1, 2, 4, 8, 16, 32 steps after each miss
