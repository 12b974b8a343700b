"""Slot-to-row packing and prefill grouping of the PyTorch backend (pure Python, no model)."""

from __future__ import annotations

import random

import pytest

from djl_python.backends.pytorch.cpu_policy import prefill_groups
from djl_python.backends.pytorch.slot_rows import RowMove, SlotRows


def test_rows_stay_packed_through_random_joins_and_leaves() -> None:
    rows = SlotRows(8)
    rng = random.Random(0)
    occupied: set[int] = set()
    for _ in range(500):
        if occupied and (len(occupied) == 8 or rng.random() < 0.5):
            slot = rng.choice(sorted(occupied))
            rows.release(slot)
            occupied.remove(slot)
        else:
            slot = rng.choice([s for s in range(8) if s not in occupied])
            rows.assign(slot)
            occupied.add(slot)
        assert len(rows) == len(occupied)
        assert sorted(rows.row(s) for s in occupied) == list(range(len(occupied)))


def test_release_moves_the_last_row_into_the_hole() -> None:
    rows = SlotRows(4)
    for slot in (0, 1, 2, 3):
        assert rows.assign(slot) == slot
    assert rows.release(1) == RowMove(slot=3, src=3, dst=1)
    assert rows.row(3) == 1
    assert rows.release(3) == RowMove(slot=2, src=2, dst=1)  # slot 3 now sits in row 1
    assert rows.release(2) is None  # the last occupied row: nothing to move
    assert rows.release(2) is None  # idempotent
    assert rows.assign(3) == 1  # a new slot takes the first free row
    assert rows.assign(3) == 1  # re-prefilling an occupied slot keeps its row


def test_assign_refuses_more_rows_than_slots() -> None:
    rows = SlotRows(1)
    rows.assign(0)
    with pytest.raises(RuntimeError, match="no free KV row"):
        rows.assign(1)


def test_prefill_groups_bound_padding() -> None:
    lengths = [200, 16, 20, 18, 250, 190, 17]
    groups = prefill_groups(lengths, merge_pad=32)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        longest = max(lengths[i] for i in group)
        assert sum(longest - lengths[i] for i in group) <= 32 * (len(group) - 1)
    assert groups == [[1, 6, 3, 2], [5, 0], [4]]  # shortest first; 250 is too far from 200 to pad to


def test_prefill_groups_without_a_bound_is_one_forward() -> None:
    assert prefill_groups([5, 300, 7], merge_pad=None) == [[0, 1, 2]]
    assert prefill_groups([9], merge_pad=32) == [[0]]
