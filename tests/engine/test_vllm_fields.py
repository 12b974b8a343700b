"""vLLM's sampling fields in the engine: ``min_tokens``, ``min_p``, ``skip_special_tokens``.

Semantics from vLLM's ``SamplingParams`` (vllm-project/vllm, vllm/sampling_params.py): min_p
keeps tokens whose probability is at least ``min_p`` times the most likely token's;
``min_tokens`` is the number of tokens generated before EOS or a stop token / string may end
the request; ``skip_special_tokens`` (default true) leaves special tokens out of the text.
"""

from __future__ import annotations

import math

import pytest
import torch

from djl_python.engine import Engine, InvalidRequest, SamplingParams
from djl_python.engine.sampling import Sampler
from tests.engine.fake_backend import FakeBackend

EOS = 2


def run(engine: Engine, rid: str) -> list:
    outs = []
    while engine.has_unfinished():
        outs += [o for o in engine.step() if o.request_id == rid]
    return outs


def test_min_tokens_holds_back_eos_until_reached(tiny_tokenizer) -> None:
    backend = FakeBackend(rule=lambda seq: EOS)  # the model wants to stop at once
    engine = Engine(backend, tiny_tokenizer)
    alone = run(engine, engine.add_request([7], SamplingParams(max_new_tokens=10)))
    assert [t for o in alone for t in o.token_ids] == [EOS]
    rid = engine.add_request([7], SamplingParams(max_new_tokens=10, min_tokens=3))
    outs = run(engine, rid)
    tokens = [t for o in outs for t in o.token_ids]
    assert EOS not in tokens[:3] and tokens[3:] == [EOS], tokens  # EOS masked for exactly 3 tokens
    assert outs[-1].finish_reason == "eos_token"


def test_min_tokens_ignores_stop_sequences_before_it(tiny_tokenizer) -> None:
    hello = tiny_tokenizer.encode("Hello")
    script = hello * 6 + [EOS]
    backend = FakeBackend(rule=lambda seq: script[len(seq) - 1])
    engine = Engine(backend, tiny_tokenizer)
    early = run(engine, engine.add_request([7], SamplingParams(max_new_tokens=30, stop=("Hello",))))
    assert "".join(o.text for o in early) == ""  # the first "Hello" matches at once
    late = run(engine, engine.add_request([7], SamplingParams(max_new_tokens=30, stop=("Hello",),
                                                                min_tokens=len(hello) * 2 + 1)))
    text = "".join(o.text for o in late)
    assert text == "HelloHello" and late[-1].finish_reason == "stop_sequence"


def test_min_tokens_above_max_tokens_is_refused() -> None:
    with pytest.raises(InvalidRequest) as err:
        SamplingParams(max_new_tokens=4, min_tokens=5)
    assert err.value.field == "min_tokens"
    for bad in (-1, 1.5, True):
        with pytest.raises(InvalidRequest):
            SamplingParams(min_tokens=bad)


def test_skip_special_tokens_false_keeps_their_text(tiny_tokenizer) -> None:
    hello = tiny_tokenizer.encode("Hello")
    bos = tiny_tokenizer.bos_token_id
    script = hello + [bos] + hello + [EOS]
    engine = Engine(FakeBackend(rule=lambda seq: script[len(seq) - 1]), tiny_tokenizer)
    skipped = run(engine, engine.add_request([7], SamplingParams(max_new_tokens=30)))
    kept = run(engine, engine.add_request([7], SamplingParams(max_new_tokens=30, skip_special_tokens=False)))
    assert "".join(o.text for o in skipped) == "HelloHello"
    assert "".join(o.text for o in kept) == f"Hello{tiny_tokenizer.bos_token}Hello"  # EOS text never shown


def test_min_p_drops_tokens_below_the_fraction_of_the_top_one() -> None:
    # p(token 1) / p(token 0) = 0.4: min_p 0.5 removes it, min_p 0.3 keeps it.
    logits = torch.full((1, 8), -math.inf)
    logits[0, 0], logits[0, 1] = 0.0, math.log(0.4)

    def draws(min_p: float) -> set[int]:
        sampler = Sampler(1, 8)
        params = SamplingParams(do_sample=True, temperature=1.0, min_p=min_p)
        sampler.start(0, [0], params)
        return {sampler.sample(logits, [0], [params]).token_ids[0] for _ in range(200)}

    assert draws(0.5) == {0}
    assert draws(0.3) == {0, 1}
    assert draws(0.0) == {0, 1}


def test_min_p_log_probs_exclude_removed_tokens() -> None:
    logits = torch.tensor([[2.0, 1.0, -3.0, -4.0]])
    sampler = Sampler(1, 4)
    params = SamplingParams(do_sample=True, min_p=0.2, logprobs=True, top_logprobs=4)
    sampler.start(0, [0], params)
    out = sampler.sample(logits, [0], [params])
    assert set(out.top_logprobs[0]) == {0, 1}  # e^-5 and e^-6 of the top: removed
    assert not torch.isnan(torch.tensor(out.logprobs)).any()


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_min_p_out_of_range_is_refused(bad) -> None:
    with pytest.raises(InvalidRequest) as err:
        SamplingParams(min_p=bad)
    assert err.value.field == "min_p"
