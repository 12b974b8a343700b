"""Which KV-cache row holds which slot: occupied rows are kept packed at ``0..n-1``.

The engine names requests' KV rows by *slot* (Neuron's ``seq_ids``), hands out the
lowest free slot, and frees slots in whatever order requests finish. Used directly as
row indices, the running slots soon have holes (``0, 3, 4, 9, ...``) and every decode
step must gather the running rows' keys and values (``index_select``, a full copy of
the attended K/V per layer: a large share of a CPU decode step). The PyTorch
backend has no compiled shapes tying a slot to a row, so it maps slots to rows and
keeps the occupied rows packed: a new slot takes row ``n``, and a released row is
filled by moving the last occupied row into it (one copy of that row's written
columns, once per finished request, instead of a gather every step).

Invariant: ``row_of[slot_at[r]] == r`` for every ``r < len(slot_at)``; rows at or
beyond ``len(slot_at)`` are free. Pure Python; the caller moves the tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


def first_if_contiguous(rows: Sequence[int]) -> int | None:
    """``rows[0]`` when ascending ``rows`` are consecutive (slice them, not gather), else None."""
    return rows[0] if rows[-1] - rows[0] == len(rows) - 1 else None


@dataclass(frozen=True)
class RowMove:
    """Row ``src`` (now holding ``slot``) must be copied into row ``dst``."""

    slot: int
    src: int
    dst: int


class SlotRows:
    """Slot -> row map of one backend; ``max_slots`` slots and as many rows."""

    def __init__(self, max_slots: int) -> None:
        self._row_of: dict[int, int] = {}
        self._slot_at: list[int] = []
        self.max_slots = max_slots

    def __len__(self) -> int:
        """Occupied rows, which are exactly ``0..len-1``."""
        return len(self._slot_at)

    def row(self, slot: int) -> int:
        """The row of an occupied slot (KeyError otherwise)."""
        return self._row_of[slot]

    def assign(self, slot: int) -> int:
        """The slot's row, taking the first free row if the slot holds none."""
        row = self._row_of.get(slot)
        if row is None:
            if len(self._slot_at) >= self.max_slots:
                raise RuntimeError(f"no free KV row for slot {slot}: all {self.max_slots} rows are occupied")
            row = len(self._slot_at)
            self._slot_at.append(slot)
            self._row_of[slot] = row
        return row

    def release(self, slot: int) -> RowMove | None:
        """Free the slot's row; returns the move that keeps the rows packed, if one is needed."""
        row = self._row_of.pop(slot, None)
        if row is None:
            return None
        last = len(self._slot_at) - 1
        moved = self._slot_at.pop()
        if row == last:
            return None
        self._slot_at[row] = moved
        self._row_of[moved] = row
        return RowMove(slot=moved, src=last, dst=row)
