"""Constrained decoding: a request's output format as a grammar, and the token masks it allows.

A ``Constraint`` says what a request's output must be (a JSON schema, a regular expression,
one of several strings, or a context-free grammar); it is plain data, part of
``SamplingParams``, hashable, and knows nothing of any API (each API builds it from its own
fields and names the field for errors). The grammar engine is llguidance (guidance-ai/llguidance,
also behind vLLM's ``guidance`` backend and llama.cpp); nothing here compiles a grammar by hand.

Contracts:

* ``GrammarCompiler.matcher(constraint)`` is thread-safe and is meant to run off the engine
  thread (``AsyncEngine`` calls it in a worker thread before the request is queued): building
  the grammar of a large schema is slow next to a decode step. Compiled grammars are
  cached by constraint (LRU, ``max_cached``); each request gets a cheap copy of the cached one.
* A constraint that cannot compile raises ``InvalidRequest(constraint.field, <llguidance's
  message>)``, so the API answers 400 naming the user's field; nothing reaches the engine loop.
* ``GrammarMatcher.consume(token)`` advances one request's matcher after its token was chosen
  from the mask; a token the grammar refuses raises ``GrammarViolation`` (that request alone
  fails). ``done`` is true once the grammar can take nothing more: the engine then ends the
  request (``finish_reason`` stop) without spending a step on the EOS token.
* ``fill_masks(matchers)`` writes one row of allowed-token bits per matcher (bit ``t % 32`` of
  word ``t // 32``; the EOS ids are allowed where the grammar may end), computed in parallel by
  llguidance's executor. Ids at or beyond the tokenizer's vocabulary are never allowed.
  ``masks_during(matchers)`` starts that computation in a background thread and returns at once,
  so a step's masks are computed while the model runs; the engine calls it before the forward
  and reads the rows after it. A matcher must not advance while its mask is being computed (the
  engine consumes tokens only after reading the step's masks).

No torch here: the sampler turns the bits into a logits mask (``engine/sampling.py``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from djl_python.engine.constraint import Constraint
from djl_python.engine.errors import InvalidRequest

if TYPE_CHECKING:
    from djl_python.engine.sampling import AllowedTokens

class GrammarViolation(RuntimeError):
    """The request's grammar refused a token, or failed (llguidance's error state: a resource limit
    or an internal error mid-output); the request ends with an error, never as a normal stop."""


class GrammarMatcher:
    """One request's position in its grammar (wraps an ``llguidance.LLMatcher``).

    ``eos_alias`` maps the engine's other EOS ids to the one llguidance knows, where the installed
    llguidance takes a single EOS id (1.3, the newest for Python 3.9).
    """

    def __init__(self, matcher: Any, eos_alias: Mapping[int, int]) -> None:
        self._matcher = matcher
        self._eos_alias = eos_alias

    @property
    def done(self) -> bool:
        """The grammar is complete and allows nothing more (only EOS); an errored matcher is not done."""
        return bool(self._matcher.is_stopped()) and not self._matcher.is_error()

    def accepts(self, token: int) -> bool:
        """Whether ``token`` is the token the grammar's mask would pick among equals: allowed next and,
        where the grammar forces the next bytes, their canonical first token (llguidance's mask then
        allows that one alone, though a shorter token spelling a prefix of them would also validate)."""
        token = self._eos_alias.get(token, token)
        forced = self._matcher.compute_ff_tokens()
        if forced:
            return bool(token == forced[0])
        return bool(self._matcher.validate_tokens([token]) == 1)

    def consume(self, token: int) -> None:
        """Advance past ``token``; ``GrammarViolation`` when it is refused or the grammar fails."""
        accepted = self._matcher.consume_token(self._eos_alias.get(token, token))
        if not accepted or self._matcher.is_error():
            raise GrammarViolation(f"token {token} ended the output's grammar: {_one_line([self._matcher.get_error()])}")

    @property
    def raw(self) -> Any:
        return self._matcher


class GrammarCompiler:
    """Compiles and caches grammars for one tokenizer; see the module docstring."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: Sequence[int], max_cached: int = 256) -> None:
        self._hf_tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._eos_ids = [int(t) for t in eos_ids]
        self.max_cached = max_cached
        self._lock = threading.Lock()
        self._ll_tokenizer: Any = None
        self._eos_alias: dict[int, int] = {}  # filled when llguidance takes a single EOS id
        self._executor: Any = None
        self._pool: Any = None  # the background thread of ``masks_during``, started on first use
        self._cache: OrderedDict[Constraint, Any] = OrderedDict()
        self._compiling: dict[Constraint, threading.Event] = {}  # one compile per constraint at a time
        self.hits = 0
        self.misses = 0

    def _tokenizer(self, field: str) -> Any:
        """llguidance's view of the tokenizer, built once (it walks the whole vocabulary). Under the lock."""
        if self._ll_tokenizer is None:
            try:
                import llguidance
                import llguidance.hf
            except ImportError:
                raise InvalidRequest(field, "constrained decoding needs the llguidance package, which is "
                                     "not installed on this server") from None
            try:
                try:
                    self._ll_tokenizer = llguidance.hf.from_tokenizer(
                        self._hf_tokenizer, n_vocab=self.vocab_size, eos_token=self._eos_ids or None)
                except TypeError:  # older llguidance (1.3, the newest for Python 3.9) takes one EOS id
                    primary = self._primary_eos()
                    self._ll_tokenizer = llguidance.hf.from_tokenizer(
                        self._hf_tokenizer, n_vocab=self.vocab_size, eos_token=primary)
                    if primary is not None:
                        self._eos_alias = {eos: primary for eos in self._eos_ids if eos != primary}
            except Exception as err:  # noqa: BLE001 - a slow (non-Rust) tokenizer, for one
                raise InvalidRequest(field, f"constrained decoding is not available for this model's "
                                     f"tokenizer: {err}") from None
            self._executor = llguidance.LLExecutor()
        return self._ll_tokenizer

    def _primary_eos(self) -> Optional[int]:
        """The one EOS id for an llguidance that takes one: the tokenizer's own (a chat model's end of
        turn) when the engine stops on it, else the engine's first."""
        own = getattr(self._hf_tokenizer, "eos_token_id", None)
        if own in self._eos_ids:
            return int(own)
        return self._eos_ids[0] if self._eos_ids else None

    def matcher(self, constraint: Constraint) -> GrammarMatcher:
        """A fresh matcher for ``constraint``; ``InvalidRequest(constraint.field)`` if it cannot compile.
        Concurrent requests for one uncached constraint wait for a single compile."""
        while True:
            with self._lock:
                template = self._cache.get(constraint)
                if template is not None:
                    self._cache.move_to_end(constraint)
                    self.hits += 1
                    return GrammarMatcher(template.deep_copy(), self._eos_alias)
                tokenizer = self._tokenizer(constraint.field)
                pending = self._compiling.get(constraint)
                if pending is None:
                    self._compiling[constraint] = threading.Event()
                    break
            pending.wait()  # another thread compiles it; then it is cached (or failed: compile again)
        try:
            import llguidance  # importable: _tokenizer checked it

            grammar = _grammar_text(constraint)
            # Compiled outside the lock, once (the constructor compiles; errors leave it in error state).
            template = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
            if template.is_error():
                raise InvalidRequest(constraint.field, f"cannot be compiled: {_one_line([template.get_error()])}")
            with self._lock:
                self.misses += 1
                self._cache[constraint] = template
                while len(self._cache) > self.max_cached:
                    self._cache.popitem(last=False)
        finally:
            with self._lock:
                self._compiling.pop(constraint).set()
        return GrammarMatcher(template.deep_copy(), self._eos_alias)

    def masks_during(self, matchers: Sequence[GrammarMatcher]) -> StepMasks:
        """Start computing ``matchers``' masks in a background thread (nothing to start for none)."""
        if not matchers:
            return StepMasks(self, (), None)
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="djl-grammar-masks")
        return StepMasks(self, matchers, self._pool.submit(self.fill_masks, list(matchers)))

    def fill_masks(self, matchers: Sequence[GrammarMatcher]) -> np.ndarray:
        """``[len(matchers), ceil(vocab / 32)]`` int32 bits of the tokens each matcher allows next."""
        import llguidance.numpy as llnp

        masks = llnp.allocate_token_bitmask(len(matchers), self.vocab_size)
        if len(matchers) == 1:
            llnp.fill_next_token_bitmask(matchers[0].raw, masks, 0)
        else:  # the executor exists: it was made with the tokenizer, before any matcher
            llnp.fill_next_token_bitmask_par(self._executor, [(m.raw, i) for i, m in enumerate(matchers)], masks)
        for alias, primary in self._eos_alias.items():  # where the one EOS llguidance knows is allowed, all are
            allowed = (masks[:, primary // 32] >> (primary % 32)) & 1
            masks[:, alias // 32] |= (allowed << (alias % 32)).astype(np.int32)
        return masks


class StepMasks:
    """One step's masks, computed in the background (see ``GrammarCompiler.masks_during``)."""

    def __init__(self, compiler: "GrammarCompiler", matchers: Sequence[GrammarMatcher], future: Any) -> None:
        self._compiler = compiler
        self._index = {id(m): i for i, m in enumerate(matchers)}
        self._future = future

    def rows(self, matchers: Sequence[GrammarMatcher]) -> np.ndarray:
        """The masks of ``matchers``, in that order; those not computed in the background are computed now."""
        missing = [m for m in matchers if id(m) not in self._index]
        if self._future is None:
            return self._compiler.fill_masks(matchers)
        done = self._future.result()  # first: llguidance's executor then serves one call at a time
        if len(missing) == len(matchers):
            return self._compiler.fill_masks(matchers)
        if not missing:
            return done[[self._index[id(m)] for m in matchers]]
        now = self._compiler.fill_masks(missing)
        extra = {id(m): i for i, m in enumerate(missing)}
        return np.stack([done[self._index[id(m)]] if id(m) in self._index else now[extra[id(m)]] for m in matchers])


def masks_needed(matchers: Sequence[Optional[GrammarMatcher]], greedy: Sequence[bool], logits: Any,
                 step: StepMasks) -> Optional["AllowedTokens"]:
    """The grammar masks of the rows of ``logits`` that need one (``matchers[i]`` None: row ``i`` is
    free); None when none does.

    A plain greedy row (``greedy[i]``) whose argmax its grammar ``accepts`` needs no mask: the argmax
    of the masked logits is that same token (llama.cpp samples grammars the same way). Only the
    others are masked: sampled rows with the masks ``step`` computed during the forward, greedy rows
    whose argmax was refused with a mask computed now.
    """
    rows = [i for i, m in enumerate(matchers) if m is not None]
    if not rows:
        return None
    from djl_python.engine.sampling import AllowedTokens, greedy_tokens

    plain = [i for i in rows if greedy[i]]
    if plain:
        argmax = greedy_tokens(logits[plain] if len(plain) < len(matchers) else logits)
        refused = {i for i, token in zip(plain, argmax) if not matchers[i].accepts(token)}  # type: ignore[union-attr]
        rows = [i for i in rows if i not in plain or i in refused]
        if not rows:
            return None
    return AllowedTokens(rows, step.rows([matchers[i] for i in rows]))  # type: ignore[misc]


def _grammar_text(constraint: Constraint) -> str:
    """llguidance's grammar for ``constraint`` (no validation yet)."""
    import llguidance

    try:
        if constraint.kind == "json_schema":
            options = {"whitespace_flexible": bool(constraint.whitespace)}
            if constraint.whitespace:
                options["whitespace_pattern"] = constraint.whitespace
            return str(llguidance.LLMatcher.grammar_from_json_schema(constraint.value, defaults=options))
        if constraint.kind == "regex":
            return str(llguidance.LLMatcher.grammar_from_regex(constraint.value))
        return str(llguidance.grammar_from("choice" if constraint.kind == "choice" else "grammar", constraint.value))
    except Exception as err:  # noqa: BLE001 - ValueError for bad JSON or a grammar that does not convert
        raise InvalidRequest(constraint.field, f"cannot be compiled: {err}") from None


def _one_line(messages: Sequence[str], limit: int = 300) -> str:
    """llguidance's first message on one line (it spans several: the pattern, a caret, the reason)."""
    text = " ".join(line.strip() for line in (messages[0] if messages else "").splitlines() if line.strip())
    return (text[:limit] + "...") if len(text) > limit else (text or "invalid grammar")
