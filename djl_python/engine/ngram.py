"""Prompt-lookup (n-gram) proposals for speculative decoding, as vLLM's ``ngram`` method makes them.

The tokens that followed the latest earlier occurrence of the sequence's last ``n`` tokens are
proposed as its next ones, for the longest ``n`` from ``max_n`` down to ``min_n`` that occurs
earlier (vLLM's ``prompt_lookup_max`` / ``prompt_lookup_min``). ``min_n`` is 2: a single recurring
token proposes often and is rarely right, and a rejected proposal costs a wider forward than a
decode (docs/performance.md). It pays where the output repeats
its input: code editing, summarising or quoting a given text, extracting fields. No model, no
torch: the engine verifies the proposals with one forward (``Backend.verify``) and keeps the
longest prefix that greedy decoding would have produced (``engine/speculation.py``), so output
equals plain greedy decoding whatever is proposed.
"""

from __future__ import annotations

from typing import Sequence


def propose(tokens: Sequence[int], k: int, max_n: int = 4, min_n: int = 2) -> list[int]:
    """Up to ``k`` proposed tokens after ``tokens`` (none when no suffix n-gram recurs)."""
    length = len(tokens)
    for n in range(min(max_n, length - 1), min_n - 1, -1):
        suffix = list(tokens[length - n:])
        # The latest earlier occurrence: scan back from the position just before the suffix itself.
        for start in range(length - n - 1, -1, -1):
            if tokens[start] == suffix[0] and list(tokens[start:start + n]) == suffix:
                follow = list(tokens[start + n: start + n + k])
                if follow:
                    return follow
    return []
