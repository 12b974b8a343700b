"""The sampler on constructed logits: each parameter's effect, seeds, log-probs."""

from __future__ import annotations

import math

import pytest
import torch

from djl_python.engine.sampling import Sampler
from djl_python.engine.request import SamplingParams

VOCAB = 32


def sample(logits: torch.Tensor, params: list[SamplingParams], sampler: Sampler | None = None, slots=None):
    sampler = sampler or Sampler(max_slots=8, vocab_size=VOCAB)
    slots = slots if slots is not None else list(range(len(params)))
    for slot, p in zip(slots, params):
        sampler.start(slot, [0], p)
    return sampler.sample(logits, slots, params)


def random_logits(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, VOCAB, generator=torch.Generator().manual_seed(seed)) * 2


def test_greedy_is_argmax() -> None:
    logits = random_logits(4)
    out = sample(logits, [SamplingParams()] * 4)
    assert out.token_ids == logits.argmax(-1).tolist() and out.logprobs is None


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(do_sample=True, top_k=1),
        SamplingParams(do_sample=True, top_p=1e-6),
        SamplingParams(do_sample=True, temperature=1e-4),
        SamplingParams(do_sample=True, temperature=0.0),
        SamplingParams(do_sample=True, typical_p=1e-6, temperature=1e-3),
    ],
)
def test_degenerate_sampling_equals_greedy(params: SamplingParams) -> None:
    logits = random_logits(6, seed=1)
    for _ in range(5):
        assert sample(logits, [params] * 6).token_ids == logits.argmax(-1).tolist()


def test_top_k_and_top_p_only_choose_allowed_tokens() -> None:
    logits = random_logits(1, seed=2).expand(400, VOCAB).contiguous()
    top3 = set(logits[0].topk(3).indices.tolist())
    chosen = sample(logits, [SamplingParams(do_sample=True, top_k=3, temperature=5.0)] * 400).token_ids
    assert set(chosen) == top3  # all three appear at a high temperature, nothing else
    # Probabilities 0.4, 0.3, 0.2, ...: the smallest set reaching 0.6 is the first two.
    head = torch.tensor([0.4, 0.3, 0.2] + [0.1 / (VOCAB - 3)] * (VOCAB - 3))
    logits = head.log().expand(400, VOCAB).contiguous()
    chosen = sample(logits, [SamplingParams(do_sample=True, top_p=0.6)] * 400).token_ids
    assert set(chosen) == {0, 1}


def test_sampling_follows_the_distribution() -> None:
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1] + [1e-9] * (VOCAB - 3)])).expand(3000, VOCAB).contiguous()
    chosen = torch.tensor(sample(logits, [SamplingParams(do_sample=True)] * 3000).token_ids)
    freq = torch.bincount(chosen, minlength=3)[:3].float() / 3000
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.04)


def test_temperature_sharpens_and_flattens() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2] + [1e-9] * (VOCAB - 3)])).expand(2000, VOCAB).contiguous()
    cold = sample(logits, [SamplingParams(do_sample=True, temperature=0.3)] * 2000).token_ids
    hot = sample(logits, [SamplingParams(do_sample=True, temperature=3.0)] * 2000).token_ids
    # softmax(logits / T): p(token 0) = 0.81 at T=0.3, 0.38 at T=3 (0.5 untempered).
    for chosen, temperature in ((cold, 0.3), (hot, 3.0)):
        expected = (logits[0] / temperature).softmax(-1)[0].item()
        assert chosen.count(0) / 2000 == pytest.approx(expected, abs=0.04)
    assert cold.count(0) > 1000 > hot.count(0)


def test_typical_p_drops_atypical_tokens() -> None:
    # One dominant token and a flat tail: the dominant token is "atypical" (far below the entropy).
    probs = torch.tensor([0.5] + [0.5 / (VOCAB - 1)] * (VOCAB - 1))
    logits = probs.log().expand(500, VOCAB).contiguous()
    chosen = sample(logits, [SamplingParams(do_sample=True, typical_p=0.4)] * 500).token_ids
    assert 0 not in chosen
    assert 0 in sample(logits, [SamplingParams(do_sample=True)] * 500).token_ids


def test_repetition_penalty_hf_semantics() -> None:
    # Token 5 is best, but the prompt contains it; penalty 2 halves its positive logit.
    logits = torch.full((1, VOCAB), -1.0)
    logits[0, 5], logits[0, 6], logits[0, 7] = 4.0, 3.0, -0.5
    sampler = Sampler(4, VOCAB)
    params = SamplingParams(repetition_penalty=2.0)
    sampler.start(0, [5, 7], params)
    assert sampler.sample(logits.clone(), [0], [params]).token_ids == [6]
    # Without the penalty token 5 wins.
    assert Sampler(4, VOCAB).sample(logits.clone(), [0], [SamplingParams()]).token_ids == [5]
    # Negative logits are multiplied (-0.5 -> -1.0 falls below the unseen -0.9), not divided.
    negative = torch.full((1, VOCAB), -5.0)
    negative[0, 7], negative[0, 8] = -0.5, -0.9
    sampler.start(1, [7], params)
    assert sampler.sample(negative, [1], [params]).token_ids == [8]


def test_presence_and_frequency_penalties_count_generated_tokens() -> None:
    logits = torch.zeros(1, VOCAB)
    logits[0, 3], logits[0, 4] = 1.0, 0.8
    for params in (SamplingParams(presence_penalty=0.5), SamplingParams(frequency_penalty=0.5)):
        sampler = Sampler(4, VOCAB)
        sampler.start(2, [3, 4], params)  # prompt tokens do not count (OpenAI semantics)
        assert sampler.sample(logits.clone(), [2], [params]).token_ids == [3]  # 3 is now generated once
        assert sampler.sample(logits.clone(), [2], [params]).token_ids == [4]  # 1.0 - 0.5 < 0.8
    # Frequency grows with the count, presence does not.
    picks = {}
    variants = {"frequency": SamplingParams(frequency_penalty=0.3), "presence": SamplingParams(presence_penalty=0.3)}
    for name, params in variants.items():
        sampler = Sampler(4, VOCAB)
        sampler.start(0, [1], params)
        picks[name] = [sampler.sample(logits.clone(), [0], [params]).token_ids[0] for _ in range(6)]
    assert picks["frequency"] == [3, 4, 3, 4, 3, 4]  # 1.0 - 0.3 n3 against 0.8 - 0.3 n4
    assert picks["presence"] == [3, 4, 3, 3, 3, 3]  # 0.7 against 0.5 once both were seen


def test_penalty_state_is_per_slot_and_reset_on_start() -> None:
    logits = torch.zeros(2, VOCAB)
    logits[:, 3], logits[:, 4] = 1.0, 0.8
    params = SamplingParams(presence_penalty=0.5)
    sampler = Sampler(4, VOCAB)
    sampler.start(0, [1], params)
    sampler.start(1, [1], SamplingParams())
    assert sampler.sample(logits.clone(), [0, 1], [params, SamplingParams()]).token_ids == [3, 3]
    assert sampler.sample(logits.clone(), [0, 1], [params, SamplingParams()]).token_ids == [4, 3]
    sampler.start(0, [1], params)  # a new request in slot 0 starts clean
    assert sampler.sample(logits[:1].clone(), [0], [params]).token_ids == [3]


def test_seeded_row_is_independent_of_the_batch() -> None:
    seeded = SamplingParams(do_sample=True, seed=1234, temperature=1.5)
    logits = random_logits(1, seed=3)
    alone = Sampler(8, VOCAB)
    alone.start(0, [0], seeded)
    solo = [alone.sample(logits, [0], [seeded]).token_ids[0] for _ in range(20)]
    batch = Sampler(8, VOCAB)
    others = [SamplingParams(do_sample=True), SamplingParams(do_sample=True, seed=7), SamplingParams()]
    params = [others[0], others[1], seeded, others[2]]
    for slot, p in zip([1, 3, 5, 6], params):
        batch.start(slot, [0], p)
    big = torch.cat([random_logits(2, seed=9), logits, random_logits(1, seed=10)])
    in_batch = [batch.sample(big, [1, 3, 5, 6], params).token_ids[2] for _ in range(20)]
    assert in_batch == solo and len(set(solo)) > 1


def test_logprobs_are_log_softmax_for_greedy_and_normalised_for_sampling() -> None:
    logits = random_logits(2, seed=4)
    params = [
        SamplingParams(logprobs=True, top_logprobs=5),
        SamplingParams(do_sample=True, top_k=4, logprobs=True, top_logprobs=8),
    ]
    out = sample(logits.clone(), params)
    expected = logits[0].log_softmax(-1)
    assert out.logprobs[0] == pytest.approx(expected[out.token_ids[0]].item(), abs=1e-5)
    top = out.top_logprobs[0]
    assert list(top) == expected.topk(5).indices.tolist() and out.token_ids[0] in top
    # Sampled row: top-k 4 leaves exactly 4 tokens whose probabilities sum to one.
    sampled_top = out.top_logprobs[1]
    assert len(sampled_top) == 4 and out.token_ids[1] in sampled_top
    assert math.fsum(math.exp(v) for v in sampled_top.values()) == pytest.approx(1.0, abs=1e-5)
    assert out.logprobs[1] == pytest.approx(sampled_top[out.token_ids[1]], abs=1e-6)


def test_sample_does_not_modify_the_logits() -> None:
    logits = random_logits(2, seed=5)
    before = logits.clone()
    params = [SamplingParams(repetition_penalty=1.5, do_sample=True, top_k=3), SamplingParams(frequency_penalty=1.0)]
    sample(logits, params)
    assert torch.equal(logits, before)


@pytest.mark.parametrize(
    "kw",
    [
        dict(temperature=0.7, top_k=10),
        dict(top_p=0.8),
        dict(typical_p=0.9),
        dict(temperature=1.3, top_k=12, top_p=0.9, typical_p=0.8),
    ],
)
def test_warping_matches_transformers_logits_warpers(kw) -> None:
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
        TypicalLogitsWarper,
    )

    from djl_python.engine.sampling import warp_logits

    logits = random_logits(3, seed=11)
    expected = logits.clone()
    warpers = []
    if "temperature" in kw:
        warpers.append(TemperatureLogitsWarper(kw["temperature"]))
    if "top_k" in kw:
        warpers.append(TopKLogitsWarper(kw["top_k"]))
    if "top_p" in kw:
        warpers.append(TopPLogitsWarper(kw["top_p"]))
    if "typical_p" in kw:
        warpers.append(TypicalLogitsWarper(kw["typical_p"]))
    for warper in warpers:
        expected = warper(None, expected)
    got = warp_logits(logits, [SamplingParams(do_sample=True, **kw)] * 3)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    assert torch.allclose(got[~torch.isinf(got)], expected[~torch.isinf(expected)])
    assert (~torch.isinf(got)).sum() < got.numel()  # something was masked


# -- no NaN can come out of valid parameters, and invalid ones are refused --------

@pytest.mark.parametrize("name", ["temperature", "top_p", "typical_p", "repetition_penalty", "presence_penalty",
                                  "frequency_penalty"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_naming_the_field(name, value):
    from djl_python.engine.request import InvalidRequest

    with pytest.raises(InvalidRequest) as refused:
        SamplingParams(do_sample=True, **{name: value})
    assert refused.value.field == name


@pytest.mark.parametrize("value", [1e-300, 0.001, 1e300])
def test_repetition_penalty_outside_its_safe_range_is_refused(value):
    from djl_python.engine.request import InvalidRequest

    with pytest.raises(InvalidRequest, match="repetition_penalty"):
        SamplingParams(repetition_penalty=value)


def test_a_temperature_below_the_floor_is_greedy_and_finite():
    logits = random_logits(3) * 40  # large logits: / 1e-40 would overflow to inf, softmax to NaN
    params = [SamplingParams(do_sample=True, temperature=t, logprobs=True, top_logprobs=3, seed=1)
              for t in (1e-40, 1e-300, 5e-6)]
    assert all(p.greedy for p in params)
    out = sample(logits, params)
    assert out.token_ids == logits.argmax(-1).tolist()
    assert all(math.isfinite(lp) for lp in out.logprobs)
    assert all(math.isfinite(v) for row in out.top_logprobs for v in row.values())


def test_extreme_penalties_keep_logprobs_finite():
    logits = random_logits(2) * 40
    params = [SamplingParams(repetition_penalty=0.01, presence_penalty=2.0, logprobs=True, top_logprobs=5),
              SamplingParams(do_sample=True, repetition_penalty=100.0, frequency_penalty=-2.0, logprobs=True,
                             top_logprobs=5, top_k=2, seed=3)]
    sampler = Sampler(max_slots=8, vocab_size=VOCAB)
    for slot, p in enumerate(params):
        sampler.start(slot, list(range(VOCAB)), p)  # every token seen: the penalty hits all logits
    for _ in range(3):
        out = sampler.sample(logits, [0, 1], params)
        assert all(math.isfinite(lp) for lp in out.logprobs)
        assert all(math.isfinite(v) for row in out.top_logprobs for v in row.values())


def test_logprobs_of_non_finite_logits_are_reported_finite():
    """A model overflow (inf / NaN logits) must not put NaN into JSON: -9999.0 as vLLM reports."""
    logits = random_logits(1)
    logits[0, 3] = math.inf
    logits[0, 5] = math.nan
    out = sample(logits, [SamplingParams(logprobs=True, top_logprobs=4)])
    assert all(math.isfinite(lp) for lp in out.logprobs)
    assert all(math.isfinite(v) for row in out.top_logprobs for v in row.values())


@pytest.mark.parametrize("ids", [(-1,), (2**64,), (True,)])
def test_absurd_stop_token_ids_are_refused(ids):
    from djl_python.engine.request import InvalidRequest

    with pytest.raises(InvalidRequest, match="stop_token_ids"):
        SamplingParams(stop_token_ids=ids)


def test_suppressing_min_tokens_ids_does_not_modify_the_logits() -> None:
    """The suppress path masks ids on its own copy: the caller's float32 logits (which ``.float()``
    returns as themselves) are the backend's, and a failed step may be retried on them."""
    logits = random_logits(2, seed=6)
    logits[0, 7] = 50.0  # the greedy choice, suppressed below
    before = logits.clone()
    sampler = Sampler(max_slots=8, vocab_size=VOCAB)
    params = [SamplingParams(), SamplingParams()]
    for slot, p in enumerate(params):
        sampler.start(slot, [0], p)
    out = sampler.sample(logits, [0, 1], params, suppress=[{7}, set()])
    assert out.token_ids[0] != 7
    assert torch.equal(logits, before)


def test_min_p_keeps_a_token_exactly_at_the_threshold_as_transformers_does() -> None:
    """transformers' MinPLogitsWarper removes tokens with ``p < min_p * p_max``: a token at
    exactly that probability stays."""
    from transformers.generation.logits_process import MinPLogitsWarper

    from djl_python.engine.sampling import warp_logits

    logits = torch.full((1, VOCAB), -30.0)
    logits[0, 0] = 0.0
    logits[0, 1] = torch.tensor(0.5).log()  # p_1 / p_0 == 0.5 exactly, in float32
    got = warp_logits(logits, [SamplingParams(do_sample=True, min_p=0.5)])
    expected = MinPLogitsWarper(0.5)(None, logits.clone())
    assert torch.isfinite(got[0, :2]).all() and torch.isinf(got[0, 2:]).all()
    assert torch.equal(torch.isinf(got), torch.isinf(expected))


# -- each warper per row: a batch mixes rows that use it with rows that do not -------------------

def _mixed(row0: SamplingParams, logits: torch.Tensor) -> torch.Tensor:
    """Warp ``logits`` (2 rows) with ``row0``'s warper on row 0 and plain sampling on row 1."""
    from djl_python.engine.sampling import warp_logits

    return warp_logits(logits, [row0, SamplingParams(do_sample=True)])


def test_top_k_applies_to_its_row_only() -> None:
    got = _mixed(SamplingParams(do_sample=True, top_k=3), random_logits(2, seed=21))
    assert int(torch.isfinite(got[0]).sum()) == 3 and torch.isfinite(got[1]).all()


def test_top_p_applies_to_its_row_only_and_cuts_at_exactly_its_mass() -> None:
    """Probabilities 0.5, 0.25, 0.25 (exact in float32): top_p 0.5 keeps the first token only, as
    transformers' TopPLogitsWarper does (the mass before the second token reaches top_p)."""
    from transformers.generation.logits_process import TopPLogitsWarper

    logits = torch.full((2, VOCAB), -math.inf)
    logits[:, :3] = torch.tensor([0.0, -math.log(2), -math.log(2)])
    got = _mixed(SamplingParams(do_sample=True, top_p=0.5), logits)
    expected = TopPLogitsWarper(0.5)(None, logits[:1].clone())
    assert torch.equal(torch.isfinite(got[:1]), torch.isfinite(expected))
    assert int(torch.isfinite(got[0]).sum()) == 1 and int(torch.isfinite(got[1]).sum()) == 3


def test_min_p_applies_to_its_row_only() -> None:
    from transformers.generation.logits_process import MinPLogitsWarper

    logits = random_logits(2, seed=22)
    got = _mixed(SamplingParams(do_sample=True, min_p=0.3), logits)
    expected = MinPLogitsWarper(0.3)(None, logits[:1].clone())
    assert torch.equal(torch.isinf(got[:1]), torch.isinf(expected)) and torch.isinf(got[0]).any()
    assert torch.isfinite(got[1]).all()


@pytest.mark.parametrize("mass", [0.2, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_typical_p_matches_transformers_per_row(mass: float, seed: int) -> None:
    from transformers.generation.logits_process import TypicalLogitsWarper

    logits = random_logits(2, seed=seed) * (seed / 2)  # flatter and sharper distributions
    got = _mixed(SamplingParams(do_sample=True, typical_p=mass), logits)
    expected = TypicalLogitsWarper(mass)(None, logits[:1].clone())
    assert torch.equal(torch.isinf(got[:1]), torch.isinf(expected))
    assert torch.isfinite(got[1]).all()


def test_logprobs_alone_are_reported_and_an_impossible_token_is_minus_9999() -> None:
    """``logprobs`` without ``top_logprobs`` still reports the chosen token's log-prob; a masked
    (impossible) token reports exactly vLLM's clamp, -9999.0."""
    logits = random_logits(1, seed=23)
    out = sample(logits, [SamplingParams(logprobs=True)])
    assert out.logprobs is not None
    assert out.logprobs[0] == pytest.approx(logits[0].log_softmax(-1)[out.token_ids[0]].item(), abs=1e-5)
    masked = torch.full((1, VOCAB), -math.inf)
    masked[0, 4] = 0.0
    sampler = Sampler(max_slots=8, vocab_size=VOCAB)
    sampler.start(0, [0], SamplingParams(logprobs=True, top_logprobs=2))
    out = sampler.sample(masked, [0], [SamplingParams(logprobs=True, top_logprobs=2)], suppress=[{4}])
    assert out.logprobs == [-9999.0]


def test_repetition_penalty_divides_logits_between_zero_and_one_and_counts_generated_tokens() -> None:
    """transformers' rule is by sign: a positive logit, even below 1, is divided. A token the
    request generated (not only one of its prompt) is penalised from the next step on."""
    logits = torch.full((1, VOCAB), -3.0)
    logits[0, 5], logits[0, 6] = 0.8, 0.5
    params = SamplingParams(repetition_penalty=2.0)
    sampler = Sampler(4, VOCAB)
    sampler.start(0, [9], params)
    assert sampler.sample(logits.clone(), [0], [params]).token_ids == [5]  # 5 generated: seen from now
    assert sampler.sample(logits.clone(), [0], [params]).token_ids == [6]  # 0.8 / 2 = 0.4 < 0.5


def test_top_logprobs_of_one_row_are_reported_beside_a_row_that_wants_none() -> None:
    out = sample(random_logits(2, seed=24), [SamplingParams(logprobs=True, top_logprobs=3),
                                             SamplingParams(logprobs=True)])
    assert out.top_logprobs is not None and len(out.top_logprobs[0]) == 3 and out.top_logprobs[1] == {}


def test_greedy_tokens_of_logits_off_the_numpy_path() -> None:
    """Logits that are not CPU float32 (CUDA, or another dtype) take torch's argmax: per row."""
    from djl_python.engine.sampling import greedy_tokens

    logits = random_logits(3, seed=25).double()
    assert greedy_tokens(logits) == logits.argmax(-1).tolist()
    assert greedy_tokens(logits.float()) == logits.argmax(-1).tolist()


def test_top_p_of_one_masks_nothing_even_where_the_mass_rounds_to_one() -> None:
    """A row with top_p 1.0 beside a row with top_p < 1: its logits [30, 0, ...] put float32
    probability 1.0 on the first token, so any cut at a mass of 1.0 would drop every other."""
    logits = torch.zeros(2, VOCAB)
    logits[1, 0] = 30.0
    from djl_python.engine.sampling import warp_logits

    got = warp_logits(logits, [SamplingParams(do_sample=True, top_p=0.5), SamplingParams(do_sample=True, top_p=1.0)])
    assert torch.isfinite(got[1]).all()


def test_a_row_without_typical_p_keeps_every_token_beside_one_with_it() -> None:
    """A peaked row (all its float32 mass on one token) next to a typical_p row: no mass
    threshold may reach it."""
    logits = torch.zeros(2, VOCAB)
    logits[1, 0] = 30.0
    got = _mixed(SamplingParams(do_sample=True, typical_p=0.5), logits)
    assert torch.isfinite(got[1]).all()


@pytest.mark.parametrize("mass", [0.3, 0.75, 0.8, 0.95, 0.99])
@pytest.mark.parametrize("case", ["powers_of_two", "random_4", "random_5"])
def test_typical_p_matches_transformers_on_small_vocabularies(mass: float, case: str) -> None:
    """Exact probabilities (1/2, 1/4, 1/8, 1/8: cumulative masses hit 0.75 exactly) and small
    random vocabularies, where the cut lands on the last token."""
    from transformers.generation.logits_process import TypicalLogitsWarper

    from djl_python.engine.sampling import warp_logits

    if case == "powers_of_two":
        logits = torch.tensor([[0.0, -math.log(2), -2 * math.log(2), -2 * math.log(2)]])
    else:
        logits = torch.randn(1, int(case[-1]), generator=torch.Generator().manual_seed(int(mass * 100)))
    got = warp_logits(logits, [SamplingParams(do_sample=True, typical_p=mass)])
    expected = TypicalLogitsWarper(mass)(None, logits.clone())
    assert torch.equal(torch.isinf(got), torch.isinf(expected))


def test_grammar_masks_only_their_rows_and_never_allow_ids_past_the_bits():
    import numpy as np

    from djl_python.engine.sampling import AllowedTokens

    vocab = 70  # three 32-bit words cover 96 ids; a 2-word mask covers 64, so ids 64..69 are refused
    logits = torch.arange(3 * vocab, dtype=torch.float32).view(3, vocab)
    bits = np.zeros((1, 2), dtype=np.int32)
    bits[0, 0] = (1 << 3) | (1 << 17)  # tokens 3 and 17 allowed
    sampler = Sampler(4, vocab)
    out = sampler.sample(logits, [0, 1, 2], [SamplingParams()] * 3, allowed=AllowedTokens([1], bits))
    assert out.token_ids == [vocab - 1, 17, vocab - 1]  # row 1: the best allowed id; rows 0 and 2 untouched
    assert torch.equal(logits, torch.arange(3 * vocab, dtype=torch.float32).view(3, vocab))  # input not modified
    sampled = sampler.sample(logits, [0, 1, 2], [SamplingParams(do_sample=True, seed=s) for s in range(3)],
                             allowed=AllowedTokens([0, 1, 2], np.repeat(bits, 3, axis=0)))
    assert set(sampled.token_ids) <= {3, 17}


@pytest.mark.parametrize("kw", [dict(top_p=0.9), dict(top_k=40), dict(top_k=3000, top_p=0.95),
                                dict(temperature=0.7, top_p=0.8)])
def test_top_k_top_p_on_a_large_vocabulary_equal_the_full_sort(kw, monkeypatch) -> None:
    """A model-like distribution over 50K tokens (mass decaying with rank, in shuffled order): the
    cut falls among the most likely tokens, which alone are sorted; the result equals the full
    sort's (the path checked against transformers' warpers above), in a batch with a flat row
    (whose cut needs the full sort) and a row that asks for no cut (kept whole)."""
    from djl_python.engine import sampling

    generator = torch.Generator().manual_seed(3)
    vocab = 50_000
    decay = -torch.arange(vocab, dtype=torch.float32) / 50 + torch.randn(vocab, generator=generator) * 0.3
    peaked = decay[torch.randperm(vocab, generator=generator)]
    flat = torch.randn(vocab, generator=generator) * 0.01
    logits = torch.stack([peaked, flat, peaked])
    cut = SamplingParams(do_sample=True, **kw)
    whole = SamplingParams(do_sample=True, temperature=kw.get("temperature"))
    fast = sampling.warp_logits(logits, [cut, cut, whole])
    monkeypatch.setattr(sampling, "TOP_CANDIDATES", vocab)  # every row fully sorted
    slow = sampling.warp_logits(logits, [cut, cut, whole])
    assert torch.equal(fast, slow)
    assert 0 < (~torch.isinf(fast[0])).sum().item() <= 1024  # row 0's cut lies among the candidates
    assert not torch.isinf(fast[2]).any()  # the row without a cut keeps every token
    monkeypatch.setattr(sampling, "TOP_CANDIDATES", 1024)

    def no_full_sort(*args, **kwargs):
        raise AssertionError("the peaked row alone must not sort the whole vocabulary")

    monkeypatch.setattr(torch.Tensor, "sort", no_full_sort)
    assert torch.equal(sampling.warp_logits(logits[:1], [cut]), slow[:1])
