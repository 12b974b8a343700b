"""Continuing a KV row, on every forward the PyTorch backend has: a prompt prefilled in chunks, a
prompt after a cached prefix, and verification of several tokens must each give the logits that
prefilling the whole prompt, or decoding one token at a time, gives (up to float rounding), and
leave the row as those would (the decode that follows agrees too).

These are ``Backend``'s contract for ``starts``, ``cached`` and ``verify``
(``backends/base.py``); the engine's greedy-equality tests (tests/engine) rest on them."""

from __future__ import annotations

import pytest
import torch

from djl_python.backends.pytorch.backend import PyTorchBackend
from tests.models import FORWARDS, forward_options

PROMPT = [(11 * i) % 400 + 20 for i in range(45)]
ATOL = 1e-4


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def backends(tiny_model_factory):
    loaded: dict[tuple[str, str], PyTorchBackend] = {}

    def get(arch: str, forward: str) -> PyTorchBackend:
        if (arch, forward) not in loaded:
            loaded[(arch, forward)] = PyTorchBackend.load(tiny_model_factory(arch), max_slots=3, n_positions=128,
                                                          prefix_cache_rows=1, **forward_options(forward))
        return loaded[(arch, forward)]

    return get


@pytest.mark.parametrize("arch,forward", FORWARDS)
def test_a_prompt_in_chunks_equals_it_whole(backends, arch: str, forward: str) -> None:
    backend = backends(arch, forward)
    whole = backend.prefill([0], [PROMPT])
    next_whole = backend.decode([0], [7], [len(PROMPT)])
    # In three chunks on slot 1, the middle one in a step beside slot 0's decode.
    backend.release(0)
    backend.prefill([0], [PROMPT])
    backend.decode_and_prefill([], [], [], [1], [PROMPT[:10]])
    _, middle = backend.decode_and_prefill([0], [7], [len(PROMPT)], [1], [PROMPT[:30]], starts=[10])
    _, last = backend.decode_and_prefill([], [], [], [1], [PROMPT], starts=[30])
    assert middle is not None and last is not None
    assert close(last, whole)
    assert close(backend.decode([1], [7], [len(PROMPT)]), next_whole)
    for slot in (0, 1):
        backend.release(slot)


@pytest.mark.parametrize("arch,forward", FORWARDS)
def test_a_prompt_after_its_cached_prefix_equals_it_whole(backends, arch: str, forward: str) -> None:
    backend = backends(arch, forward)
    whole = backend.prefill([0], [PROMPT])
    backend.save_prefix(0, 0, 32)
    backend.release(0)
    _, cached = backend.decode_and_prefill([], [], [], [2], [PROMPT], cached=[(0, 32)])
    assert close(cached, whole)
    backend.release(2)


@pytest.mark.parametrize("arch,forward", FORWARDS)
def test_verification_equals_decoding_one_token_at_a_time(backends, arch: str, forward: str) -> None:
    backend = backends(arch, forward)
    tokens = [31, 32, 33, 34, 35]
    backend.prefill([0], [PROMPT])
    stepwise = torch.cat([backend.decode([0], [t], [len(PROMPT) + i]) for i, t in enumerate(tokens)])
    backend.release(0)
    backend.prefill([0], [PROMPT])
    verified = backend.verify(0, tokens, len(PROMPT))
    assert verified.shape[0] == len(tokens) and close(verified, stepwise)
    # Two accepted: the row continues at position len + 2, and what the rejected tokens wrote is not read.
    after = backend.decode([0], [tokens[1]], [len(PROMPT) + 1])
    backend.release(0)
    backend.prefill([0], [PROMPT + tokens[:1]])
    assert close(after, backend.decode([0], [tokens[1]], [len(PROMPT) + 1]))
    backend.release(0)


def test_a_continued_prompt_must_match_what_its_slot_holds(backends) -> None:
    backend = backends("gpt2", "kernels")
    backend.prefill([0], [PROMPT[:10]])
    with pytest.raises(ValueError, match="starts\\[0\\] continues a 20-token prompt from 12; slot 0 holds 10"):
        backend.decode_and_prefill([], [], [], [0], [PROMPT[:20]], starts=[12])
    with pytest.raises(ValueError, match="slot 1 holds 0"):
        backend.decode_and_prefill([], [], [], [1], [PROMPT[:20]], starts=[10])
    backend.release(0)
