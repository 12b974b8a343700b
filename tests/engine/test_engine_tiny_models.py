"""The engine over a real (tiny) model: seeds, streaming text and stop sequences end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from djl_python.backends.pytorch.backend import PyTorchBackend
from djl_python.engine import Engine, SamplingParams


@pytest.fixture(scope="module")
def engine(tiny_llama: Path) -> Engine:
    backend = PyTorchBackend.load(tiny_llama, max_slots=4, n_positions=128)
    return Engine(backend, AutoTokenizer.from_pretrained(str(tiny_llama)))


def stream_all(engine: Engine, prompts: list[str], params: list[SamplingParams]) -> dict[str, list]:
    ids = [engine.add_request(engine.tokenizer.encode(p), sp) for p, sp in zip(prompts, params)]
    outputs: dict[str, list] = {i: [] for i in ids}
    while engine.has_unfinished():
        for out in engine.step():
            outputs[out.request_id].append(out)
    return {i: outputs[i] for i in ids}


def test_seeded_request_same_alone_and_in_a_full_batch(engine: Engine) -> None:
    seeded = SamplingParams(do_sample=True, seed=2024, temperature=1.0, max_new_tokens=24, ignore_eos=True)
    alone = engine.generate(["The quick brown fox"], seeded)[0].token_ids
    neighbours = [
        SamplingParams(do_sample=True, max_new_tokens=30, ignore_eos=True),
        SamplingParams(do_sample=True, seed=1, top_p=0.8, max_new_tokens=8, ignore_eos=True),
        SamplingParams(max_new_tokens=30, ignore_eos=True, frequency_penalty=1.0),
    ]
    prompts = ["Hello world!", "Paris is the capital", "The quick brown fox", "日本語"]
    results = engine.generate(prompts, [neighbours[0], neighbours[1], seeded, neighbours[2]])
    assert results[2].token_ids == alone
    different_seed = engine.generate(["The quick brown fox"], dataclasses.replace(seeded, seed=7))[0]
    assert different_seed.token_ids != alone


def test_streamed_text_equals_the_full_decode_and_never_splits_a_character(engine: Engine) -> None:
    prompts = ["emoji 😀🎉", "日本語のテキストと中文文本", "The quick brown fox", "mixed 🚀 ASCII"] * 3
    params = [SamplingParams(do_sample=True, seed=i, temperature=1.5, max_new_tokens=40) for i in range(len(prompts))]
    for outs in stream_all(engine, prompts, params).values():
        token_ids = [t for o in outs for t in o.token_ids]
        full = engine.tokenizer.decode(token_ids, skip_special_tokens=True)
        assert "".join(o.text for o in outs) == full
        for o in outs[:-1]:
            assert not o.text.endswith("\ufffd")  # an incomplete character is never streamed
        assert outs[-1].finished and sum(not o.finished for o in outs) == len(outs) - 1


def test_stop_sequence_on_real_model_output(engine: Engine) -> None:
    params = SamplingParams(max_new_tokens=40, ignore_eos=True)
    free_text = engine.generate(["Hello world!"], params)[0].text
    assert len(free_text) > 6
    stop = free_text[3:6]  # a piece of what the model says, probably spanning a token boundary
    with_stop = SamplingParams(max_new_tokens=40, ignore_eos=True, stop=(stop,))
    (outs,) = stream_all(engine, ["Hello world!"], [with_stop]).values()
    streamed = "".join(o.text for o in outs)
    assert streamed == free_text[: free_text.find(stop)]
    assert outs[-1].finish_reason == "stop_sequence"


def test_abort_mid_stream_frees_the_slot(engine: Engine) -> None:
    long = SamplingParams(max_new_tokens=100, ignore_eos=True)
    running = [engine.add_request(engine.tokenizer.encode("The quick"), long) for _ in range(4)]
    waiting = engine.add_request(engine.tokenizer.encode("Hello"), SamplingParams(max_new_tokens=3, ignore_eos=True))
    engine.step()
    assert engine.num_running == 4 and engine.num_waiting == 1
    engine.abort(running[1])
    outs = {o.request_id: o for o in engine.step()}
    assert outs[running[1]].finish_reason == "abort" and outs[waiting].token_ids
    for rid in running:
        engine.abort(rid)
    while engine.has_unfinished():
        engine.step()
    assert engine.num_running == 0
