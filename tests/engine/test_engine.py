"""The engine loop over a model-free backend: admission, abort, limits, stops, errors, seeds."""

from __future__ import annotations

import pytest

from djl_python.engine import Engine, InvalidRequest, SamplingParams
from djl_python.engine.generation_defaults import GenerationDefaults
from tests.engine.fake_backend import FakeBackend

EOS = 2


def run(engine: Engine) -> dict[str, list]:
    """Step until idle; every output per request id, in order."""
    outputs: dict[str, list] = {}
    while engine.has_unfinished():
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
    return outputs


def tokens_of(outs) -> list[int]:
    return [t for o in outs for t in o.token_ids]


def test_requests_joining_later_get_the_same_tokens_as_alone(tiny_tokenizer) -> None:
    prompts = [[10, 11, 12], [20, 21, 22, 23, 24], [30], [40, 41]]
    alone = []
    for p in prompts:
        engine = Engine(FakeBackend(), tiny_tokenizer)
        engine.add_request(p, SamplingParams(max_new_tokens=12, ignore_eos=True))
        alone.append(tokens_of(next(iter(run(engine).values()))))
    engine = Engine(FakeBackend(max_slots=2), tiny_tokenizer)
    ids, outputs = [], {}
    for step in range(200):
        if step in (0, 3, 5, 6):  # staggered arrivals, more requests than slots
            ids.append(engine.add_request(prompts[len(ids)], SamplingParams(max_new_tokens=12, ignore_eos=True)))
        if not engine.has_unfinished() and len(ids) == len(prompts):
            break
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
    assert [tokens_of(outputs[i]) for i in ids] == alone
    assert all(len(t) == 12 for t in alone)


def test_each_step_reports_every_running_request_and_final_flags(tiny_tokenizer) -> None:
    engine = Engine(FakeBackend(), tiny_tokenizer)
    rid = engine.add_request([5, 6], SamplingParams(max_new_tokens=3, ignore_eos=True))
    outs = run(engine)[rid]
    assert [len(o.token_ids) for o in outs] == [1, 1, 1]
    assert [o.finished for o in outs] == [False, False, True]
    assert outs[-1].finish_reason == "length" and outs[-1].generated_tokens == 3 and outs[-1].prompt_tokens == 2


def test_eos_finishes_and_its_text_is_not_returned(tiny_tokenizer) -> None:
    hello = tiny_tokenizer.encode("Hello")
    script = hello + [EOS]
    backend = FakeBackend(rule=lambda seq: script[len(seq) - 1])  # prompt of one token
    engine = Engine(backend, tiny_tokenizer)
    rid = engine.add_request([7], SamplingParams(max_new_tokens=20))
    outs = run(engine)[rid]
    assert tokens_of(outs) == script
    assert "".join(o.text for o in outs) == "Hello" and outs[-1].finish_reason == "eos_token"


def test_stop_sequence_across_tokens_is_cut_and_never_streamed(tiny_tokenizer) -> None:
    script = [t for w in ("Paris is", " the", " capital", " of", " France") for t in tiny_tokenizer.encode(w)]
    backend = FakeBackend(rule=lambda seq: script[min(len(seq) - 1, len(script) - 1)])
    engine = Engine(backend, tiny_tokenizer)
    rid = engine.add_request([7], SamplingParams(max_new_tokens=40, stop=("capital of",)))
    outs = run(engine)[rid]
    # Deltas cannot be taken back: had any prefix of the stop ("c", "cap", ...) been
    # streamed before the match, it would be in the concatenation.
    assert "".join(o.text for o in outs) == "Paris is the " and outs[-1].finish_reason == "stop_sequence"
    assert len(tokens_of(outs)) < len(script)


def test_abort_frees_the_slot_for_the_next_waiting_request(tiny_tokenizer) -> None:
    backend = FakeBackend(max_slots=1)
    engine = Engine(backend, tiny_tokenizer)
    first = engine.add_request([5], SamplingParams(max_new_tokens=50, ignore_eos=True))
    second = engine.add_request([6], SamplingParams(max_new_tokens=2, ignore_eos=True))
    engine.step()
    engine.step()
    assert engine.num_running == 1 and engine.num_waiting == 1
    assert engine.abort(first) is True
    assert backend.released == [0] and engine.num_running == 0
    outs = engine.step()
    by_id = {o.request_id: o for o in outs}
    assert by_id[first].finished and by_id[first].finish_reason == "abort" and by_id[first].token_ids == []
    assert by_id[second].token_ids and backend.calls[-1] == ("prefill", [0])
    assert engine.abort(first) is False  # already gone


def test_abort_of_a_waiting_request_removes_it(tiny_tokenizer) -> None:
    engine = Engine(FakeBackend(max_slots=1), tiny_tokenizer)
    engine.add_request([5], SamplingParams(max_new_tokens=3, ignore_eos=True))
    waiting = engine.add_request([6], SamplingParams(max_new_tokens=3, ignore_eos=True))
    engine.abort(waiting)
    outs = run(engine)
    assert [o.finish_reason for o in outs[waiting]] == ["abort"]
    assert engine.num_waiting == 0


def test_prompt_validation(tiny_tokenizer) -> None:
    engine = Engine(FakeBackend(n_positions=64, prefill_buckets=(16, 32)), tiny_tokenizer)
    for bad in ([], list(range(3, 36)), [1, 512], [1, -1]):
        with pytest.raises(InvalidRequest) as err:
            engine.add_request(bad, SamplingParams())
        assert err.value.field == "prompt"  # the engine's word; each API renames it (api.errors.to_api_error)
    engine.add_request([1], SamplingParams(), request_id="x")
    with pytest.raises(InvalidRequest):
        engine.add_request([1], SamplingParams(), request_id="x")
    small = Engine(FakeBackend(n_positions=16, prefill_buckets=(16,)), tiny_tokenizer)
    with pytest.raises(InvalidRequest, match="no room"):
        small.add_request(list(range(3, 19)), SamplingParams())


def test_max_new_tokens_is_clamped_to_n_positions(tiny_tokenizer) -> None:
    backend = FakeBackend(n_positions=24, prefill_buckets=(8, 16))
    engine = Engine(backend, tiny_tokenizer)
    rid = engine.add_request(list(range(3, 13)), SamplingParams(max_new_tokens=100, ignore_eos=True))
    outs = run(engine)[rid]
    # The backend checked every position < n_positions; the sequence fills exactly n_positions.
    assert len(tokens_of(outs)) == 24 - 10 and outs[-1].finish_reason == "length"


def test_one_failing_request_does_not_take_down_the_batch(tiny_tokenizer) -> None:
    class Fragile:
        """A tokenizer that cannot decode one token id."""

        def decode(self, ids, skip_special_tokens=True):
            if 99 in ids:
                raise ValueError("undecodable")
            return tiny_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    backend = FakeBackend(rule=lambda seq: 99 if seq[0] == 50 else 60)
    engine = Engine(backend, Fragile())
    bad = engine.add_request([50], SamplingParams(max_new_tokens=4))
    good = engine.add_request([51], SamplingParams(max_new_tokens=4))
    outs = run(engine)
    assert outs[bad][-1].finish_reason == "error" and "undecodable" in outs[bad][-1].error
    assert outs[good][-1].finish_reason == "length" and len(tokens_of(outs[good])) == 4


def test_backend_failure_propagates_and_reset_ends_everything(tiny_tokenizer) -> None:
    backend = FakeBackend(max_slots=2)
    engine = Engine(backend, tiny_tokenizer)
    ids = [engine.add_request([i + 5], SamplingParams(max_new_tokens=10, ignore_eos=True)) for i in range(3)]
    engine.step()
    backend.fail_next = RuntimeError("device lost")
    with pytest.raises(RuntimeError, match="device lost"):
        engine.step()
    outs = engine.reset("device lost")
    assert sorted(o.request_id for o in outs) == sorted(ids)
    assert all(o.finished and o.finish_reason == "error" and o.error == "device lost" for o in outs)
    assert not engine.has_unfinished()
    # The engine is usable again, from slot 0.
    rid = engine.add_request([5], SamplingParams(max_new_tokens=2))
    assert run(engine)[rid][-1].finished and backend.calls[-2] == ("prefill", [0])


def test_seeded_request_is_the_same_alone_and_in_a_full_batch(tiny_tokenizer) -> None:
    seeded = SamplingParams(do_sample=True, seed=42, max_new_tokens=16, ignore_eos=True, temperature=1.3)
    engine = Engine(FakeBackend(max_slots=4), tiny_tokenizer)
    alone = engine.generate([[9, 8, 7]], seeded)[0].token_ids
    others = [
        SamplingParams(do_sample=True, max_new_tokens=16, ignore_eos=True),
        SamplingParams(do_sample=True, seed=7, max_new_tokens=10, ignore_eos=True, top_k=5),
        SamplingParams(max_new_tokens=16, ignore_eos=True, repetition_penalty=1.3),
    ]
    results = engine.generate([[1, 2], [3, 4], [9, 8, 7], [5]], [others[0], others[1], seeded, others[2]])
    assert results[2].token_ids == alone and len(set(alone)) > 4


def test_generation_defaults_fill_only_unset_fields(tiny_tokenizer) -> None:
    backend = FakeBackend(rule=lambda seq: 60)
    defaults = GenerationDefaults(repetition_penalty=100.0, eos_token_ids=(60,))
    engine = Engine(backend, tiny_tokenizer, generation_defaults=defaults)
    result = engine.generate([[5]], SamplingParams(max_new_tokens=5))[0]
    # generation_config's EOS id counts as EOS; the repetition penalty cannot avoid the only choice.
    assert result.token_ids == [60] and result.finish_reason == "eos_token"
    explicit = engine.generate([[5]], SamplingParams(max_new_tokens=3, ignore_eos=True, repetition_penalty=1.0))[0]
    assert explicit.token_ids == [60, 60, 60]


def test_logprobs_reach_the_outputs(tiny_tokenizer) -> None:
    engine = Engine(FakeBackend(), tiny_tokenizer)
    rid = engine.add_request([5, 6], SamplingParams(max_new_tokens=4, ignore_eos=True, logprobs=True, top_logprobs=3))
    outs = run(engine)[rid]
    assert all(len(o.logprobs) == 1 and len(o.top_logprobs) == 1 for o in outs)
    assert all(o.token_ids[0] == max(o.top_logprobs[0], key=o.top_logprobs[0].get) for o in outs)  # greedy


def test_generate_from_text_prompts(tiny_tokenizer) -> None:
    engine = Engine(FakeBackend(), tiny_tokenizer)
    results = engine.generate(["Hello world", "The quick"], SamplingParams(max_new_tokens=6, ignore_eos=True))
    for r in results:
        assert len(r.token_ids) == 6 and r.finish_reason == "length"
        assert r.text == tiny_tokenizer.decode(r.token_ids, skip_special_tokens=True)


def test_a_sampling_failure_ends_only_its_request(tiny_tokenizer, monkeypatch) -> None:
    engine = Engine(FakeBackend(), tiny_tokenizer)
    real_sample = engine.sampler.sample

    def sample(logits, slots, params):
        # Stands in for a fault tied to one request's parameters; batches containing it fail as a whole.
        if any(p.seed == 13 for p in params):
            raise RuntimeError("bad row")
        return real_sample(logits, slots, params)

    monkeypatch.setattr(engine.sampler, "sample", sample)
    bad = engine.add_request([5], SamplingParams(do_sample=True, seed=13, max_new_tokens=3))
    good = [engine.add_request([6 + i], SamplingParams(max_new_tokens=3, ignore_eos=True)) for i in range(2)]
    outs = run(engine)
    assert [o.finish_reason for o in outs[bad]] == ["error"] and "bad row" in outs[bad][0].error
    assert all(len(tokens_of(outs[g])) == 3 and outs[g][-1].finish_reason == "length" for g in good)


def test_generate_with_an_invalid_prompt_queues_nothing(tiny_tokenizer) -> None:
    engine = Engine(FakeBackend(), tiny_tokenizer)
    with pytest.raises(InvalidRequest):
        engine.generate([[5], []], SamplingParams(max_new_tokens=2))
    assert engine.num_waiting == 0 and engine.num_running == 0
    assert engine.generate([[5]], SamplingParams(max_new_tokens=2, ignore_eos=True))[0].finish_reason == "length"


def test_stop_token_ids_end_the_request_without_their_text(tiny_tokenizer) -> None:
    dog = tiny_tokenizer.encode(" dog")[-1]
    script = tiny_tokenizer.encode("Hello") + [dog] + tiny_tokenizer.encode(" more")
    backend = FakeBackend(rule=lambda seq: script[min(len(seq) - 1, len(script) - 1)])
    params = SamplingParams(max_new_tokens=20, stop_token_ids=(dog,))
    result = Engine(backend, tiny_tokenizer).generate([[7]], params)[0]
    assert result.token_ids[-1] == dog and result.text == "Hello" and result.finish_reason == "eos_token"
