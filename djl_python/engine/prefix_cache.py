"""Which cached KV row holds the longest prefix of a prompt: the engine's half of prefix caching.

The backend keeps ``rows`` KV rows that no slot owns (``BackendLimits.prefix_cache_rows``) and
copies into and out of them (``Backend.save_prefix``, ``decode_and_prefill(cached=...)``). This
index decides what goes where, with no torch:

* ``store(tokens)`` picks the row to overwrite for a request whose slot holds the KV of ``tokens``,
  and records it. The engine stores a prompt tentatively as soon as its prefill completes (so a
  prompt admitted in a later step, while that request still runs, shares its system prompt), and a
  request again when it ends (its prompt and every generated token but the last, which was never
  fed). The row overwritten is one that holds only a prefix of ``tokens`` (nothing is lost: a
  request's own earlier save, or the row its prompt hit), else the least recently used one. Only
  whole blocks of ``block`` tokens are kept.
* ``lookup(prompt)`` returns ``(row, n)``: the row holding the longest run of whole blocks that
  starts the prompt, ``n < len(prompt)`` (at least one token must be computed, for its logits).
  A hit marks the row recently used.

Blocks are found by a chain of hashes (each block's key hashes the previous key and its tokens),
and a hit is checked against the row's stored tokens, so a hash collision can only cost a miss,
never a wrong prefix. Invariant: every key in the index points to a row whose current tokens
start with that key's blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

DEFAULT_BLOCK = 16


class PrefixCache:
    """The index over ``rows`` cached KV rows; see the module docstring."""

    def __init__(self, rows: int, block: int = DEFAULT_BLOCK) -> None:
        if rows < 1 or block < 1:
            raise ValueError(f"a prefix cache needs rows >= 1 and block >= 1, got {rows} and {block}")
        self.rows, self.block = rows, block
        self._tokens: list[tuple[int, ...]] = [()] * rows
        self._keys: list[list[int]] = [[] for _ in range(rows)]
        self._index: dict[int, int] = {}  # block-chain key -> row
        self._lru: OrderedDict[int, None] = OrderedDict((row, None) for row in range(rows))
        self.hit_tokens = 0  # prompt tokens served from the cache
        self.prompt_tokens = 0  # prompt tokens looked up

    def _chain(self, tokens: Sequence[int]) -> list[int]:
        keys, key = [], 0
        for start in range(0, len(tokens) - self.block + 1, self.block):
            key = hash((key, tuple(tokens[start:start + self.block])))
            keys.append(key)
        return keys

    def lookup(self, prompt: Sequence[int]) -> Optional[tuple[int, int]]:
        """``(row, n)`` for the longest cached prefix of ``prompt`` (``0 < n < len(prompt)``), or None;
        counted in the statistics, and the row marked recently used."""
        self.prompt_tokens += len(prompt)
        best = self.peek(prompt)
        if best is not None:
            self._lru.move_to_end(best[0])
            self.hit_tokens += best[1]
        return best

    def peek(self, prompt: Sequence[int]) -> Optional[tuple[int, int]]:
        """What ``lookup`` would return, with no effect (the scheduler prices admissions with it)."""
        best: Optional[tuple[int, int]] = None
        for i, key in enumerate(self._chain(prompt[: len(prompt) - 1])):
            row = self._index.get(key)
            n = (i + 1) * self.block
            if row is None or self._tokens[row][:n] != tuple(prompt[:n]):
                break
            best = (row, n)
        return best

    def store(self, tokens: Sequence[int], tentative: bool = False) -> Optional[tuple[int, int]]:
        """The ``(row, n)`` to save ``tokens[:n]`` into (``n``: whole blocks), now indexed; None when
        there is not one whole block, or when the cache already holds all of it.

        ``tentative``: a prompt saved when its prefill completes, worth a row only if a later prompt
        hits it. It does not count as a use: a row it takes from the least recently used stays the
        next to be reused (until a lookup hits it), so prompts that share nothing cycle through one
        row instead of evicting the others, and a row it supersedes keeps its place."""
        n = len(tokens) - len(tokens) % self.block
        if n == 0:
            return None
        kept = tuple(tokens[:n])
        keys = self._chain(kept)  # once: the exact check, the superseded row and the index share it
        known = self._exact(kept, keys)
        if known is not None:
            if not tentative:
                self._lru.move_to_end(known)
            return None
        row = self._superseded(kept, keys)
        if row is None:
            row = next(iter(self._lru))  # the least recently used
        self._clear(row)
        self._tokens[row] = kept
        self._keys[row] = keys
        for key in self._keys[row]:
            self._index[key] = row  # the newest row serves a shared prefix
        if not tentative:  # a tentative save leaves the row where it was in the LRU order
            self._lru.move_to_end(row)
        return row, n

    def _superseded(self, kept: tuple[int, ...], keys: list[int]) -> Optional[int]:
        """The row holding the longest run of blocks that is all a prefix of ``kept`` (block-chain
        ``keys``), or None."""
        best, best_len = None, 0
        for key in keys:
            row = self._index.get(key)
            held = self._tokens[row] if row is not None else ()
            if len(held) > best_len and kept[: len(held)] == held:
                best, best_len = row, len(held)
        return best

    def forget(self, row: int) -> None:
        """Drop what ``row`` holds (its save failed): no lookup returns it until it is stored again."""
        self._clear(row)
        self._lru.move_to_end(row, last=False)  # the first to be reused

    def _clear(self, row: int) -> None:
        for key in self._keys[row]:
            if self._index.get(key) == row:
                del self._index[key]
        self._tokens[row], self._keys[row] = (), []

    def _exact(self, tokens: tuple[int, ...], keys: list[int]) -> Optional[int]:
        """A row holding at least ``tokens`` (a whole-block run whose block-chain is ``keys``), or None;
        no statistics."""
        row = self._index.get(keys[-1]) if keys else None
        if row is not None and self._tokens[row][: len(tokens)] == tokens:
            return row
        return None

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
