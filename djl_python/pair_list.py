"""``PairList``: DJL's ordered key/value list, duplicates allowed.

DJL's content is not a dict: the same key may appear twice and the order is
part of the wire format, so lookups return the first match.

The public surface is the one custom handlers written for DJL use
(djl-serving v0.26.0-v0.28.0, ``engines/python/setup/djl_python/pair_list.py``):
the constructor ``PairList(keys=None, values=None, pair_list=None,
pair_map=None)``, the ``keys`` and ``values`` lists as attributes,
``add(key=None, value=None, index=None, pair=None)`` (a ``None`` value is
ignored, as there), ``add_all``, ``get``, ``key_at``, ``value_at``,
``get_keys``, ``get_values``, ``size``, ``is_empty``. Unlike that file, the
``pair_list``/``pair_map`` constructors and ``add_all`` work (there they touch
attributes that do not exist yet, or call the ``keys`` list).
"""

from __future__ import annotations

from typing import Any, Generic, Iterable, Iterator, Mapping, Optional, TypeVar

V = TypeVar("V")


class PairList(Generic[V]):
    """An ordered list of ``(key, value)`` pairs; ``key`` may be ``None`` (a null string).

    Invariant: ``len(keys) == len(values)``.
    """

    def __init__(self, keys: Optional[list[Optional[str]]] = None, values: Optional[list[V]] = None,
                 pair_list: Optional[Iterable[tuple[Optional[str], V]]] = None,
                 pair_map: Optional[Mapping[Optional[str], V]] = None) -> None:
        self.keys: list[Optional[str]] = []
        self.values: list[V] = []
        if keys and values:
            if len(keys) != len(values):
                raise ValueError("key value size mismatch.")
            self.keys, self.values = list(keys), list(values)
        elif pair_list:
            for key, value in pair_list:
                self.keys.append(key)
                self.values.append(value)
        elif pair_map:
            for key, value in pair_map.items():
                self.keys.append(key)
                self.values.append(value)

    def add(self, key: Optional[str] = None, value: Optional[V] = None, index: Optional[int] = None,
            pair: Optional[tuple[Optional[str], V]] = None) -> None:
        """Append ``(key, value)``, insert it at ``index``, or append ``pair``; a ``None`` value is ignored."""
        if index is not None and value is not None:
            self.keys.insert(index, key)
            self.values.insert(index, value)
        elif pair:
            self.keys.append(pair[0])
            self.values.append(pair[1])
        elif value is not None:
            self.keys.append(key)
            self.values.append(value)

    def add_all(self, other: Optional["PairList[V]"]) -> None:
        if other:
            self.keys.extend(other.keys)
            self.values.extend(other.values)

    def get(self, key: Optional[str]) -> Optional[V]:
        """The value of the first pair named ``key``, or ``None``."""
        for k, v in zip(self.keys, self.values):
            if k == key:
                return v
        return None

    def key_at(self, index: int) -> Optional[str]:
        return self.keys[index]

    def value_at(self, index: int) -> V:
        return self.values[index]

    def get_keys(self) -> list[Optional[str]]:
        return self.keys

    def get_values(self) -> list[V]:
        return self.values

    def size(self) -> int:
        return len(self.keys)

    def is_empty(self) -> bool:
        return not self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def __bool__(self) -> bool:
        # An empty PairList is still a PairList: ``if content:`` in callers means "has pairs".
        return bool(self.keys)

    def __iter__(self) -> Iterator[tuple[Optional[str], V]]:
        return iter(zip(self.keys, self.values))

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, PairList) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"PairList({list(self)!r})"
