"""The engine loop: requests in, one step at a time, ``RequestOutput``s out.

``step()`` is three calls, as in nano-vllm and vLLM's ``EngineCore.step``:
``scheduler.schedule()``, the backend (``decode`` for the running requests, then
``prefill`` for newly admitted ones, both in the same step), then per request:
sample, check stop criteria, detokenise. See ``docs/architecture.md``.

Constrained requests (``SamplingParams.constraint``) carry a grammar matcher
(``engine/grammar.py``): each step masks their rows of the logits with what their grammar
allows, the chosen token advances the matcher, and a grammar that is complete ends the
request (``FinishReason.EOS``) at once. A constraint compiles before the request is queued:
in ``add_request`` unless the caller compiled it already with ``compile_constraint``
(``AsyncEngine`` does, off the engine thread).

Chunked prefill, where the backend continues prompts (``limits.can_chunk_prefill``): the
scheduler may give a prompt only part of it in one step; the engine feeds the backend each
prompt from what its slot holds to the chunk's end, and samples a request's first token in the
step whose chunk completes its prompt.

Prefix caching, where the backend keeps cached rows (``limits.prefix_cache_rows``): a prompt's KV
is saved (in whole blocks) into a cached row chosen by ``engine/prefix_cache.py`` in the step its
prefill completes, so prompts admitted in later steps while it runs share its system prompt, and
again when the request ends (prompt and generated tokens, into the same row where it still holds
the prompt); a prompt that starts with a cached run of blocks has that run copied in and computes
only the rest. Greedy output is the same with or without it.

Speculative decoding, while one plain greedy request runs and nothing prefills
(``engine/speculator.py``): the backend's own (``limits.speculation_length``: Neuron's draft), or a
proposer's tokens (``engine/proposers.py``: prompt lookup or a draft model) verified in one forward
(``Backend.verify``); either way the longest prefix greedy decoding would produce is kept
(``engine/speculation.py``), so output equals plain decoding.

Failure isolation: an exception while sampling, stopping or detokenising ends
only the request it belongs to (``finish_reason="error"``); an exception from
the backend propagates, and the caller ends everything with ``reset``.

The engine is not thread-safe: one thread calls all of its methods.
"""

from __future__ import annotations

import dataclasses

import itertools
import logging
import uuid
from typing import TYPE_CHECKING, Any, Optional, Union

from djl_python.engine.detokenizer import IncrementalDetokenizer
from djl_python.engine.generation_defaults import GenerationDefaults
from djl_python.engine.constraint import Constraint
from djl_python.engine.grammar import GrammarCompiler, GrammarMatcher, masks_needed
from djl_python.engine.offline import GenerationResult, generate
from djl_python.engine.prefix_cache import PrefixCache
from djl_python.engine.request import FinishReason, InvalidRequest, RequestOutput, RequestStatus, SamplingParams
from djl_python.engine.scheduler import DEFAULT_POLICY, Scheduler, SchedulingPolicy
from djl_python.engine.sequence import Sequence
from djl_python.engine.speculation import plain_greedy
from djl_python.engine.speculator import Speculator
from djl_python.engine.stopping import StopChecker

if TYPE_CHECKING:
    from djl_python.backends.base import Backend, BackendLimits
    from djl_python.engine.sampling import AllowedTokens, SampleOutput

logger = logging.getLogger(__name__)


class Engine:
    """Continuous batching over a ``Backend``'s slots. See the module docstring."""

    def __init__(
        self,
        backend: "Backend",
        tokenizer: Any,
        *,
        max_prefill_tokens: int | None = None,
        generation_defaults: GenerationDefaults | None = None,
        ngram_length: int = 0,
        chunked_prefill: bool = True,
        scheduling_policy: SchedulingPolicy = DEFAULT_POLICY,
        draft: "Backend | None" = None,
        draft_length: int = 0,
    ) -> None:
        """``ngram_length``: tokens one n-gram speculative step scores (prompt-lookup proposals, one
        fewer; ``engine/ngram.py``), where the backend verifies (``limits.can_verify``); 0: off.
        ``draft`` and ``draft_length``: the same with a draft model's proposals
        (``engine/proposers.py``; the draft has the backend's slots and vocabulary); ValueError for
        lengths of 1 or below 0, both at once, or a draft with fewer slots (``engine/speculator.py``).
        ``chunked_prefill``: split prompts across steps under the prefill budget, where the backend
        continues a prompt (``limits.can_chunk_prefill``; ``engine/scheduler.py``).
        ``scheduling_policy``: the order waiting requests are admitted in (``engine/scheduler.py``)."""
        # Imported here so that importing the engine package does not import torch.
        from djl_python.engine.sampling import Sampler

        self.backend = backend
        self.tokenizer = tokenizer
        self.limits: "BackendLimits" = backend.limits
        self.defaults = generation_defaults or GenerationDefaults()
        rows = self.limits.prefix_cache_rows
        self.prefix_cache: Optional[PrefixCache] = PrefixCache(rows) if rows else None
        self.scheduler = Scheduler(self.limits, max_prefill_tokens,
                                   self._cached_tokens if self.prefix_cache is not None else None,
                                   chunked=chunked_prefill and self.limits.can_chunk_prefill,
                                   policy=scheduling_policy)
        self.sampler = Sampler(self.limits.max_slots, self.limits.vocab_size)
        self._eos_ids = tuple(dict.fromkeys(self.limits.eos_token_ids + self.defaults.eos_token_ids))
        self.speculator = Speculator(backend, ngram_length, draft, draft_length)
        self.grammars = GrammarCompiler(tokenizer, self.limits.vocab_size, self._eos_ids)
        self._masks = self.grammars.masks_during([])  # this step's grammar masks
        self._requests: dict[str, Sequence] = {}
        self._pending: list[RequestOutput] = []  # aborted requests, reported by the next step
        self._ids = itertools.count()

    # -- requests ---------------------------------------------------------------------------

    def compile_constraint(self, constraint: Constraint) -> GrammarMatcher:
        """A matcher for ``constraint`` (thread-safe; cached by constraint). ``InvalidRequest`` naming
        ``constraint.field`` when it cannot compile."""
        return self.grammars.matcher(constraint)

    def add_request(self, prompt_ids: list[int], params: SamplingParams, request_id: str | None = None,
                    matcher: GrammarMatcher | None = None) -> str:
        """Queue a tokenised prompt; returns its id. Raises ``InvalidRequest`` for a prompt that cannot run
        or a constraint that cannot compile. ``matcher``: ``compile_constraint(params.constraint)``,
        when the caller compiled it already."""
        limits = self.limits
        if not prompt_ids:
            raise InvalidRequest("prompt", "the prompt is empty")
        if len(prompt_ids) >= limits.n_positions:
            raise InvalidRequest(
                "prompt",
                f"the prompt has {len(prompt_ids)} tokens; n_positions {limits.n_positions} leaves no room to generate",
            )
        if len(prompt_ids) > limits.max_prompt_len:
            raise InvalidRequest(
                "prompt", f"the prompt has {len(prompt_ids)} tokens; the longest accepted is {limits.max_prompt_len}"
            )
        if any(not isinstance(t, int) or not 0 <= t < limits.vocab_size for t in prompt_ids):
            raise InvalidRequest("prompt", f"token ids must be integers in [0, {limits.vocab_size})")
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        if request_id in self._requests:
            raise InvalidRequest("request_id", f"{request_id!r} is already in flight")
        params = self.defaults.apply(params)
        if params.constraint is not None and matcher is None:
            matcher = self.compile_constraint(params.constraint)
        max_tokens = min(params.max_new_tokens, limits.n_positions - len(prompt_ids))
        seq = Sequence(
            request_id=request_id,
            prompt_ids=list(prompt_ids),
            params=params,
            max_tokens=max_tokens,
            detokenizer=IncrementalDetokenizer(self.tokenizer, params.skip_special_tokens),
            stop_checker=StopChecker(params, max_tokens, self._eos_ids),
            matcher=matcher if params.constraint is not None else None,
        )
        self.scheduler.add(seq)
        self._requests[request_id] = seq
        return request_id

    def abort(self, request_id: str) -> bool:
        """End a request now; its slot is free for the next step. False if it is unknown or done."""
        seq = self._requests.get(request_id)
        if seq is None:
            return False
        self._finish(seq, RequestStatus.FINISHED_ABORTED)
        self._pending.append(self._output(seq, [], ""))
        return True

    def has_unfinished(self) -> bool:
        return bool(self._requests or self._pending)

    @property
    def num_running(self) -> int:
        return self.scheduler.num_running

    @property
    def num_waiting(self) -> int:
        return self.scheduler.num_waiting

    def reset(self, error_message: str) -> list[RequestOutput]:
        """End every request with ``finish_reason="error"`` (after a backend failure)."""
        outputs, self._pending = self._pending, []
        for seq in self.scheduler.clear():
            seq.status = RequestStatus.FINISHED_ERROR
            outputs.append(self._output(seq, [], "", error=error_message))
        for slot in range(self.limits.max_slots):
            self.sampler.release(slot)
            try:
                self.speculator.release(slot)
            except Exception:  # the draft may be what broke; its rows restart on the next catch-up
                logger.exception("releasing the draft's slot %d failed during reset", slot)
            try:
                self.backend.release(slot)
            except Exception:  # the backend may be the thing that broke; the rows are reset on next prefill
                logger.exception("backend.release(%d) failed during reset", slot)
        self._requests.clear()
        return outputs

    # -- the loop ---------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one step; return an output for every request that got a token, finished or was aborted."""
        outputs, self._pending = self._pending, []
        batch = self.scheduler.schedule()
        if not batch.decode and not batch.prefill:
            return outputs
        decode, prefill = batch.decode, batch.prefill
        if not prefill and len(decode) == 1 and self.speculator.can_run(decode[0]):
            if self._speculative_step(decode[0], outputs):
                return outputs
        # Prompts whose last chunk runs this step sample their first token; the others only fill KV.
        completing = [s for s in prefill if s.prefill_end == s.prompt_len]
        for seq in completing:
            self.sampler.start(seq.slot, seq.prompt_ids, seq.params)
        # The grammar masks of this step, computed while the model runs (llguidance releases the GIL);
        # plain greedy rows need one only when the grammar refuses their argmax (``_allowed``).
        self._masks = self.grammars.masks_during([s.matcher for s in decode + completing
                                                  if s.matcher is not None and not plain_greedy(s.params)])
        decode_logits, prefill_logits = self._forward(decode, prefill)
        for seq in completing:
            self._save_prefix(seq, seq.slot, seq.prompt_ids, tentative=True)
        if decode:
            self._postprocess(decode, decode_logits, outputs)
        if completing:
            if len(completing) < len(prefill):
                rows = [i for i, s in enumerate(prefill) if s.prefill_done]
                prefill_logits = prefill_logits[rows]
            self._postprocess(completing, prefill_logits, outputs)
        return outputs

    def _forward(self, decode: list[Sequence], prefill: list[Sequence]) -> tuple[Any, Any]:
        """The step's one backend call (the PyTorch backend runs both parts in one forward). Decode
        comes first: the running streams' tokens come first, and the Neuron naive strategy then pays
        one re-prefill per join (a decode of every occupied row is a plain static step), not two.
        Each prompt runs from what its slot holds (a cached prefix, or its earlier chunks) to its
        chunk's end; ``seq.prefilled`` records that end."""
        args = ([s.slot for s in decode], [s.last_token for s in decode], [s.num_tokens - 1 for s in decode],
                [s.slot for s in prefill], [s.prompt_ids[: s.prefill_end] for s in prefill])
        cache = self.prefix_cache
        # A hit must leave the chunk something to compute; the scheduler priced the chunk with this very
        # lookup (nothing is stored between the two), so only a chunk it did not price that way loses it.
        cached = [self._hit(cache.lookup(s.prompt_ids), s.prefill_end) if s.prefilled == 0 else None
                  for s in prefill] if cache is not None and prefill else None
        if cached is not None and not any(cached):
            cached = None
        starts = [s.prefilled for s in prefill] if any(s.prefilled for s in prefill) else None
        kwargs: dict[str, Any] = {}
        if cached is not None:
            kwargs["cached"] = cached
        if starts is not None:
            kwargs["starts"] = starts
        logits = self.backend.decode_and_prefill(*args, **kwargs)
        for seq in prefill:
            seq.prefilled = seq.prefill_end
        return logits

    @staticmethod
    def _hit(hit: Optional[tuple[int, int]], end: int) -> Optional[tuple[int, int]]:
        return hit if hit is not None and hit[1] < end else None

    @property
    def ngram_length(self) -> int:
        """Tokens one n-gram speculative step scores (0: no n-gram speculation)."""
        return self.speculator.ngram_length

    def _speculative_step(self, seq: Sequence, outputs: list[RequestOutput]) -> bool:
        """Up to ``k`` tokens for ``seq`` from one backend call (``engine/speculator.py``), reported as
        one output; stop criteria apply token by token. False when nothing ran."""
        accepted = self.speculator.run(seq)
        if accepted is None:
            return False
        produced: list[RequestOutput] = []
        for token in accepted:
            try:
                produced.append(self._append_token(seq, token, None, None))
            except Exception as err:  # a bad token for this tokenizer: this request alone fails
                self._fail(seq, err, outputs)
                return True
            if seq.finished:
                break
        outputs.append(_merge(produced))
        return True

    def _postprocess(self, seqs: list[Sequence], logits: Any, outputs: list[RequestOutput]) -> None:
        for seq, sampled in zip(seqs, self._sample(seqs, logits)):
            if isinstance(sampled, Exception):
                self._fail(seq, sampled, outputs)
                continue
            try:
                outputs.append(self._append_token(seq, *sampled))
            except Exception as err:  # a bad token for this tokenizer, say; other requests go on
                self._fail(seq, err, outputs)

    def _sample(self, seqs: list[Sequence], logits: Any) -> list[Union[tuple, Exception]]:
        """One ``(token, logprob, top_logprobs)`` per sequence, or the exception that sampling it raised."""
        # min_tokens: the stop ids cannot be drawn yet (only requests that set it pay for this).
        banned = [s.stop_checker.suppressed_ids(s.num_generated) if s.params.min_tokens else frozenset()
                  for s in seqs]
        suppress = banned if any(banned) else None
        try:
            return _unpack(self._draw(logits, seqs, suppress))
        except Exception as err:
            if len(seqs) == 1:
                return [err]
        # Isolate the faulty row: sample each request on its own.
        results: list[Union[tuple, Exception]] = []
        for i in range(len(seqs)):
            try:
                results.extend(_unpack(self._draw(logits[i : i + 1], seqs[i : i + 1],
                                                  suppress[i : i + 1] if suppress else None)))
            except Exception as err:
                results.append(err)
        return results

    def _draw(self, logits: Any, seqs: list[Sequence], suppress: Optional[list[frozenset[int]]]) -> "SampleOutput":
        slots, params = [s.slot for s in seqs], [s.params for s in seqs]
        allowed = self._allowed(seqs, logits)
        if allowed is not None:
            return self.sampler.sample(logits, slots, params, suppress, allowed)
        if suppress is None:  # the common case keeps the plain three-argument call
            return self.sampler.sample(logits, slots, params)
        return self.sampler.sample(logits, slots, params, suppress)

    def _allowed(self, seqs: list[Sequence], logits: Any) -> Optional["AllowedTokens"]:
        """The grammar masks of the constrained rows among ``seqs`` that need one (``grammar.masks_needed``)."""
        return masks_needed([s.matcher for s in seqs], [plain_greedy(s.params) for s in seqs], logits, self._masks)

    def _append_token(self, seq: Sequence, token: int, logprob: Optional[float], top: Optional[dict]) -> RequestOutput:
        """Record one sampled token: the grammar, the stop criteria, then the text it releases."""
        if seq.matcher is not None:
            seq.matcher.consume(token)  # a refused token raises: this request fails, others go on
        seq.output_ids.append(token)
        status = seq.stop_checker.check_token(token, seq.num_generated)
        if status is None and seq.matcher is not None and seq.matcher.done:
            status = RequestStatus.FINISHED_EOS  # the grammar is complete: only EOS could follow
        text = ""
        if not seq.stop_checker.is_stop_token(token):  # EOS / stop-token text never reaches the client
            text = seq.stop_checker.feed_text(seq.detokenizer.step(token))
        if status is not None and seq.stop_checker.matched is None:
            # Ending for another reason: release what the detokenizer and the matcher held
            # back (which may still complete a stop sequence).
            text += seq.stop_checker.feed_text(seq.detokenizer.flush())
            text += seq.stop_checker.flush()
        if seq.stop_checker.matched is not None:
            status = RequestStatus.FINISHED_STOP_SEQUENCE
        if status is not None:
            self._finish(seq, status)
        extra: dict[str, Any] = {}
        # Decoded here, once, so that renderers never need the tokenizer.
        if seq.params.logprobs:
            extra["token_texts"] = [self._token_text(token)]
            if logprob is not None:
                extra["logprobs"] = [logprob]
        if top is not None and seq.params.top_logprobs:
            extra["top_logprobs"] = [top]
            extra["top_logprob_texts"] = [{t: self._token_text(t) for t in top}]
        return self._output(seq, [token], text, **extra)

    def _token_text(self, token: int) -> str:
        """One token's text on its own (for log-prob entries; not part of the output text)."""
        return self.tokenizer.decode([token])

    def _fail(self, seq: Sequence, err: Exception, outputs: list[RequestOutput]) -> None:
        logger.exception("request %s failed", seq.request_id, exc_info=err)
        self._finish(seq, RequestStatus.FINISHED_ERROR)
        outputs.append(self._output(seq, [], "", error=f"{type(err).__name__}: {err}"))

    def _finish(self, seq: Sequence, status: RequestStatus) -> None:
        """Terminal status, slot back to the scheduler and the backend, request forgotten."""
        slot = seq.slot
        seq.status = status
        self.scheduler.finish(seq)
        if slot is not None:
            self.sampler.release(slot)
            self.speculator.release(slot)
            if self.prefix_cache is not None and status != RequestStatus.FINISHED_ERROR and seq.output_ids:
                self._save_prefix(seq, slot, (seq.prompt_ids + seq.output_ids)[: seq.num_tokens - 1])
            self.backend.release(slot)
        self._requests.pop(seq.request_id, None)

    def _cached_tokens(self, seq: Sequence) -> int:
        """The prompt tokens of ``seq`` the prefix cache holds now (the scheduler's price of its prefill)."""
        hit = self.prefix_cache.peek(seq.prompt_ids) if self.prefix_cache is not None else None
        return hit[1] if hit is not None else 0

    def _save_prefix(self, seq: Sequence, slot: Optional[int], fed: list[int], tentative: bool = False) -> None:
        """Keep the KV of ``fed``, tokens ``seq``'s slot holds (its prompt once prefilled, ``tentative``:
        ``PrefixCache.store``; at its end, the prompt and every generated token but the last). A failure
        loses only the cached row."""
        cache = self.prefix_cache
        if cache is None or slot is None:
            return
        target = None
        try:
            target = cache.store(fed, tentative=tentative)
            if target is not None:
                self.backend.save_prefix(slot, *target)
        except Exception:  # noqa: BLE001 - a cache is an optimisation: the request itself is done
            logger.exception("saving the prefix of %s failed", seq.request_id)
            if target is not None:
                cache.forget(target[0])

    @staticmethod
    def _output(seq: Sequence, token_ids: list[int], text: str, **extra: Any) -> RequestOutput:
        return RequestOutput(
            request_id=seq.request_id,
            token_ids=token_ids,
            text=text,
            finished=seq.finished,
            finish_reason=seq.status.finish_reason,
            prompt_tokens=seq.prompt_len,
            generated_tokens=seq.num_generated,
            **extra,
        )

    # -- offline convenience ----------------------------------------------------------------

    def generate(
        self, prompts: Union[list[str], list[list[int]]], params: Union[SamplingParams, list[SamplingParams], None] = None
    ) -> list[GenerationResult]:
        """Run ``prompts`` to completion (``engine/offline.py``: offline use only)."""
        return generate(self, prompts, params)


def _unpack(out: "SampleOutput") -> list[tuple]:
    n = len(out.token_ids)
    logprobs = out.logprobs or [None] * n
    tops = out.top_logprobs or [None] * n
    return list(zip(out.token_ids, logprobs, tops))


def _merge(outputs: list[RequestOutput]) -> RequestOutput:
    """One request's outputs of one step as one output: tokens, text and per-token lists in order,
    the last one's state (finished, finish reason, counts)."""
    if len(outputs) == 1:
        return outputs[0]
    return dataclasses.replace(
        outputs[-1],
        token_ids=[t for o in outputs for t in o.token_ids],
        text="".join(o.text for o in outputs),
        logprobs=[x for o in outputs for x in o.logprobs],
        top_logprobs=[x for o in outputs for x in o.top_logprobs],
        token_texts=[x for o in outputs for x in o.token_texts],
        top_logprob_texts=[x for o in outputs for x in o.top_logprob_texts],
    )

