"""The naive rolling batch's invariant, checked call by call against the Hugging Face model.

After every call each occupied slot's row holds exactly the tokens fed for it,
right-aligned at the shared cursor; the checks below use logits recomputed by
the HF model from each slot's full token list.
"""

from __future__ import annotations


import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.models import dtype_kwargs
from tests.neuron.conftest import load_neuron


@pytest.fixture
def setup(tiny_model_factory, tnx):
    model_dir = tiny_model_factory("gpt2")
    backend = load_neuron(model_dir, max_rolling_batch_size=3, n_positions=24)
    reference = AutoModelForCausalLM.from_pretrained(str(model_dir), **dtype_kwargs(torch.float32)).eval()

    def expected(tokens: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return reference(torch.tensor([tokens])).logits[0, -1]

    return backend, expected, tnx


def test_subset_decode_rebuilds_and_full_decode_does_not(setup) -> None:
    backend, expected, tnx = setup
    seqs = {0: [5, 6, 7, 8], 2: [9, 10]}
    backend.prefill([0, 2], [seqs[0], seqs[2]])
    resets = len(tnx.events("reset"))
    for step in range(3):  # all occupied slots: plain static decode steps
        tokens = [11 + step, 21 + step]
        logits = backend.decode([0, 2], tokens, [len(seqs[0]), len(seqs[2])])
        for slot, token in zip((0, 2), tokens):
            seqs[slot].append(token)
        assert torch.allclose(logits[1], expected(seqs[2]), atol=1e-4)  # row by slot id, not list position
    assert len(tnx.events("reset")) == resets
    logits = backend.decode([2], [30], [len(seqs[2])])  # slot 0 sits this one out
    seqs[2].append(30)
    assert len(tnx.events("reset")) == resets + 1
    assert torch.allclose(logits[0], expected(seqs[2]), atol=1e-4)
    logits = backend.decode([0, 2], [31, 32], [len(seqs[0]), len(seqs[2])])  # slot 0 kept its row intact
    seqs[0].append(31), seqs[2].append(32)
    assert torch.allclose(logits[0], expected(seqs[0]), atol=1e-4)
    assert torch.allclose(logits[1], expected(seqs[2]), atol=1e-4)


def test_join_reprefills_history_without_the_pending_token(setup) -> None:
    backend, expected, tnx = setup
    old = [5, 6, 7]
    backend.prefill([1], [old])
    backend.decode([1], [40], [3])
    old.append(40)
    logits = backend.prefill([0], [[8, 9]])  # the engine has sampled old's next token but not fed it
    assert logits.shape[0] == 1 and torch.allclose(logits[0], expected([8, 9]), atol=1e-4)
    logits = backend.decode([0, 1], [50, 41], [2, 4])
    assert torch.allclose(logits[1], expected(old + [41]), atol=1e-4)
    assert torch.allclose(logits[0], expected([8, 9, 50]), atol=1e-4)


def test_columns_are_compacted_when_the_cursor_runs_out(setup) -> None:
    backend, expected, tnx = setup
    long, short = list(range(5, 25)), [7, 8]  # 20 tokens: the shared cursor starts at column 20 of 24
    backend.prefill([0, 1], [long[:16], short])
    backend.release(0)
    backend.prefill([0], [long[:20]])
    for step in range(9):  # the short slot outlives the columns left after the long prompt
        if step == 2:
            backend.release(0)
            resets = len(tnx.events("reset"))
        logits = backend.decode([1], [60 + step], [len(short)])
        short.append(60 + step)
        assert torch.allclose(logits[0], expected(short), atol=1e-4)
    assert len(tnx.events("reset")) == resets + 1  # plain steps up to column 23, then one compaction
    assert backend.cursor == len(short)


def test_decode_position_must_follow_the_history(setup) -> None:
    backend, _, _ = setup
    backend.prefill([0], [[5, 6]])
    with pytest.raises(ValueError, match="slot 0: decode at position 5"):
        backend.decode([0], [7], [5])
    with pytest.raises(ValueError, match="no sequence"):
        backend.decode([1], [7], [0])
