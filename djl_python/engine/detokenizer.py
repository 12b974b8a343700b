"""Incremental detokenisation that never splits a character.

A token of a byte-level BPE (GPT-2, Llama 3, SmolLM) can carry half of a UTF-8
character, and SentencePiece tokenizers decode a token differently depending on
what precedes it (the leading-space rule). Decoding tokens one at a time is
therefore wrong; decoding everything each step is O(length) per token.

We use TGI's prefix/read offsets: decode a short window that starts a few
tokens *before* the new ones (``prefix_offset``) so the context rules apply,
and emit only what the window adds beyond the text of its already-emitted part
(``read_offset``). While the window's text ends in U+FFFD (an incomplete UTF-8
sequence) nothing is emitted; the next token completes it.

Invariant: the concatenation of every ``step`` result and the final ``flush``
equals ``tokenizer.decode(all_ids, skip_special_tokens=True)``. Per-token cost
is O(window): the window restarts at each emission, so it spans only the tokens
since the last emitted text plus the previous ones as context.
"""

from __future__ import annotations

from typing import Any

_REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Turns a growing list of generated token ids into text deltas.

    ``tokenizer`` is any object with ``decode(ids, skip_special_tokens=...)``
    (a ``transformers`` tokenizer). The generated ids are decoded on their own,
    without the prompt, so the stream equals the decode of the generated ids.
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        self._ids: list[int] = []
        self._prefix_offset = 0  # window start: context already emitted
        self._read_offset = 0  # first token whose text is not emitted yet

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special)

    def step(self, token_id: int) -> str:
        """Append one token; return the text it completes (possibly empty)."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(_REPLACEMENT_CHAR):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Return whatever is held back (an unfinished character becomes U+FFFD)."""
        if self._read_offset == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]
