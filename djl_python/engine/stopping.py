"""When a request stops, and which of its text the client may see yet.

Two kinds of criteria:

* **Token criteria** (``check_token``): an EOS id (the backend's and the model's
  ``generation_config.json`` ids, unless ``ignore_eos``) or one of the request's
  ``stop_token_ids`` ends the request with ``eos_token`` (djl-serving treated
  ``stop_token_ids`` as extra EOS ids; we keep its finish reason). Reaching
  ``max_tokens`` ends it with ``length``. The stopping token's id is reported,
  its text is not.
* ``min_tokens``: before that many tokens neither a stop id nor a stop sequence ends the
  request (vLLM's rule; the sampler also masks the stop ids, see ``suppressed_ids``).
* **Stop sequences** (``feed_text``), matched on the detokenised *text*, so a
  sequence split across tokens (``"\\n\\n"`` as ``"\\n"`` + ``"\\n"``, or inside one
  token) is found. Text that could still grow into a stop sequence is held back:
  a stream never shows a prefix of a stop sequence that later matches. When one
  matches, it and everything after it are dropped.
"""

from __future__ import annotations

from typing import Iterable, Optional

from djl_python.engine.request import RequestStatus, SamplingParams


class StopChecker:
    """Per-request stop state. Not thread-safe; one engine thread calls it."""

    def __init__(self, params: SamplingParams, max_tokens: int, eos_token_ids: Iterable[int]) -> None:
        self.max_tokens = max_tokens
        self._stop_ids = frozenset(params.stop_token_ids) | (
            frozenset() if params.ignore_eos else frozenset(eos_token_ids)
        )
        self._stops = tuple(params.stop)
        self.min_tokens = params.min_tokens
        self._generated = 0
        self._held = ""  # text not yet released: a suffix that may start a stop sequence
        self.matched: Optional[str] = None  # the stop sequence that ended the request

    def check_token(self, token_id: int, num_generated: int) -> Optional[RequestStatus]:
        """Status the request ends with after its ``num_generated``-th token, or None to go on.

        A stop token wins over length, so a request whose last allowed token is EOS
        reports ``eos_token``.
        """
        self._generated = num_generated
        if token_id in self._stop_ids and num_generated >= self.min_tokens:
            return RequestStatus.FINISHED_EOS
        if num_generated >= self.max_tokens:
            return RequestStatus.FINISHED_LENGTH
        return None

    def is_stop_token(self, token_id: int) -> bool:
        return token_id in self._stop_ids

    def suppressed_ids(self, num_generated: int) -> frozenset[int]:
        """Ids the next token must not be: the stop ids while fewer than ``min_tokens`` were generated."""
        return self._stop_ids if num_generated < self.min_tokens else frozenset()

    def feed_text(self, delta: str) -> str:
        """Take new text; return what may be shown now. Sets ``matched`` on a stop sequence."""
        if self.matched is not None:
            return ""
        if not self._stops or self._generated < self.min_tokens:
            return delta
        text = self._held + delta
        # Earliest complete match wins; a stop sequence can only begin inside the held
        # text or the delta, because emitted text never ends with a stop prefix.
        cut = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.matched = next(s for s in self._stops if text.find(s) == cut)
            self._held = ""
            return text[:cut]
        hold = self._partial_match_len(text)
        self._held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        """Release held text when the request ends for another reason."""
        held, self._held = self._held, ""
        return "" if self.matched is not None else held

    def _partial_match_len(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop sequence."""
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:k]):
                    best = k
                    break
        return best
