"""``PairList``: DJL's ordered key/value list, duplicates allowed.

DJL's content is not a dict: the same key may appear twice and the order is
part of the wire format, so lookups return the first match.
"""

from __future__ import annotations

from typing import Generic, Iterator, Optional, TypeVar

V = TypeVar("V")


class PairList(Generic[V]):
    """An ordered list of ``(key, value)`` pairs; ``key`` may be ``None`` (a null string)."""

    def __init__(self, pairs: Optional[list[tuple[Optional[str], V]]] = None) -> None:
        self._keys: list[Optional[str]] = [k for k, _ in pairs or ()]
        self._values: list[V] = [v for _, v in pairs or ()]

    def add(self, key: Optional[str], value: V) -> None:
        self._keys.append(key)
        self._values.append(value)

    def get(self, key: Optional[str]) -> Optional[V]:
        """The value of the first pair named ``key``, or ``None``."""
        for k, v in zip(self._keys, self._values):
            if k == key:
                return v
        return None

    def key_at(self, index: int) -> Optional[str]:
        return self._keys[index]

    def value_at(self, index: int) -> V:
        return self._values[index]

    def get_keys(self) -> list[Optional[str]]:
        return list(self._keys)

    def get_values(self) -> list[V]:
        return list(self._values)

    def size(self) -> int:
        return len(self._keys)

    def is_empty(self) -> bool:
        return not self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[tuple[Optional[str], V]]:
        return iter(zip(self._keys, self._values))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PairList) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"PairList({list(self)!r})"
