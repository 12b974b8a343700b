"""Slots and admission: which requests prefill and which decode in the next step.

The scheduler deals only in sequences, slots and a token budget. It imports
neither torch nor Neuron (a test checks), so it is tested in milliseconds.

Policy (one ``schedule()`` call per engine step):

* **Slots.** A slot is a KV-cache row, ``range(limits.max_slots)``. Free slots
  are handed out lowest id first, so the ids of one prefill are ascending, as
  transformers-neuronx continuous batching needs (djl-serving#2160).
* **Admission.** Waiting requests are admitted while a slot is free, at most
  ``limits.max_prefill_slots`` per step, and while their prefill costs
  (``limits.prefill_cost(len)``: the padded bucket on a bucketed backend, the real
  tokens on one that packs prompts) fit ``max_prefill_tokens``. Without chunked
  prefill, the first request of a step is always admitted when a slot is free,
  whatever its length. A prompt whose start a prefix cache holds is charged only
  what is left to compute. The budget is never filled by skipping a request that
  does not fit: admission stops at the first one that does not.
* **Order** (``policy``). ``fcfs``: arrival order. ``shortest_prompt_first`` (the
  default): the waiting request whose prefill costs least
  (``limits.prefill_cost`` of its length less what the prefix cache held when it
  arrived: on a bucketed backend prompts in one bucket cost the same and keep
  their arrival order), ties in arrival order, unless the oldest waiting request
  has been overtaken ``max_overtakes`` (``limits.max_slots``) times already, which
  then goes next. When a burst arrives together, each request's first token
  waits for the prefills ordered before it, so shortest first gives the smallest
  mean and median wait (the classic shortest-job-first result); the bound keeps
  that from starving a long prompt under steady load: no request is overtaken by
  more than one batch of later ones. A request that arrived earlier is overtaken
  at least as often as any later one still waiting (whatever overtakes the later
  one overtakes it too; the queue only grows at its tail and keeps its order), so
  checking the oldest is enough.
* **Chunked prefill** (``chunked``, where the backend can continue a prompt in a later step:
  ``limits.can_chunk_prefill``). A prompt is no longer admitted whole or not at all: the
  budget is filled exactly, the last prompt admitted getting what is left of it as a chunk,
  and a prompt whose prefill is under way gets the next chunk before anything new is admitted
  (in admission order, whatever the policy). One long prompt then costs the running streams
  several short steps rather than one long one, and a burst's prompts pack every step's budget.
  A sequence's first token comes from the step that completes its prompt. The prefill list is
  sorted by slot all the same.
* **Budget default.** The backend's own (``limits.prefill_budget``: the PyTorch
  backend's on a CPU), else 512 tokens, or one largest bucket where prefills are
  padded (a bucketed backend pays for it anyway). Smaller steps give the first
  tokens of a burst sooner (a request's first token comes with the step that ends
  its prompt, and a step's end is a finer mark) and keep running streams' gaps
  short; each step still decodes them, which is what a large burst pays for it
  (docs/performance.md compares budgets).
* **Prefill and decode in the same step.** Unlike DJL and TGI Neuron, which
  either prefill *or* decode, a step decodes every request already running
  *and* prefills the admitted ones (one ``backend.decode_and_prefill`` call,
  decode first; the PyTorch native forward runs both in one forward). Running
  streams therefore get a token every step however many requests arrive; the
  prefill budget bounds how much a burst of arrivals slows them down.
* **Positions.** The scheduler never decodes a sequence past ``n_positions``:
  ``add`` rejects a sequence whose prompt plus ``max_tokens`` exceeds it, and
  the engine finishes a sequence when it reaches ``max_tokens``.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal, get_args

from djl_python.engine.request import RequestStatus
from djl_python.engine.sequence import Sequence

if TYPE_CHECKING:  # only for annotations: the scheduler must stay importable without torch
    from djl_python.backends.base import BackendLimits

DEFAULT_MIN_PREFILL_TOKENS = 512

SchedulingPolicy = Literal["fcfs", "shortest_prompt_first"]
DEFAULT_POLICY: SchedulingPolicy = "shortest_prompt_first"  # the config's default is checked against it


@dataclass
class SchedulerOutput:
    """What the engine runs in one step. Both lists are sorted by ascending slot."""

    # Sequences that prefill this step, each from ``seq.prefilled`` to ``seq.prefill_end``: newly
    # admitted ones (slot assigned, status RUNNING), then, under chunked prefill, ones whose prompt an
    # earlier step began. None has output tokens yet. The engine passes their slots and prompts as
    # ``decode_and_prefill``'s prefill part.
    prefill: list[Sequence] = field(default_factory=list)
    # Sequences that were already running (each has at least one output token);
    # the engine passes them, last token at ``num_tokens - 1``, as its decode part.
    decode: list[Sequence] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.prefill and not self.decode


class Scheduler:
    """Admission into a fixed set of slots, in the policy's order, with a per-step prefill budget.

    Contract with the engine:

    * ``add(seq)`` queues a WAITING sequence.
    * ``schedule()`` admits waiting sequences (assigning ``seq.slot`` and setting
      RUNNING) and returns them with the running ones; it changes nothing else.
    * The engine runs the backend, appends tokens, and calls ``finish(seq)`` for
      every sequence that finished or was aborted, after setting its terminal
      status. ``finish`` frees the slot at once, so the next ``schedule()`` can
      give it to the next waiting request.
    """

    def __init__(self, limits: "BackendLimits", max_prefill_tokens: int | None = None,
                 cached_tokens: Callable[[Sequence], int] | None = None, chunked: bool = False,
                 policy: SchedulingPolicy = DEFAULT_POLICY) -> None:
        """``cached_tokens(seq)``: how many of a waiting prompt's tokens a prefix cache will serve;
        only the rest is charged to the budget (None: no cache, every token charged). ``chunked``:
        chunked prefill; ``policy``: the order of admission (module docstring). ValueError where the
        backend cannot continue a prompt or for an unknown policy."""
        if max_prefill_tokens is not None and max_prefill_tokens < 1:
            raise ValueError(f"max_prefill_tokens must be >= 1, got {max_prefill_tokens}")
        if chunked and not limits.can_chunk_prefill:
            raise ValueError("chunked prefill needs a backend that continues a prompt (limits.can_chunk_prefill)")
        if policy not in get_args(SchedulingPolicy):
            raise ValueError(f"policy must be one of {', '.join(get_args(SchedulingPolicy))}, got {policy!r}")
        self.chunked = chunked
        self.policy = policy
        self.limits = limits
        # Default (module docstring): the backend's, else 512 tokens, or one largest bucket when
        # prefills are padded.
        default = limits.prefill_budget or (max(limits.max_prompt_len, DEFAULT_MIN_PREFILL_TOKENS)
                                            if limits.padded_prefill else DEFAULT_MIN_PREFILL_TOKENS)
        self.max_prefill_tokens = max_prefill_tokens or default
        self.max_prefill_slots = limits.max_prefill_slots or limits.max_slots
        self.max_overtakes = limits.max_slots  # shortest_prompt_first's bound (module docstring)
        self._cached_tokens = cached_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: dict[int, Sequence] = {}
        self._free_slots: list[int] = list(range(limits.max_slots))  # a heap: lowest id first

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence. Raises ValueError if it could run past ``n_positions``."""
        if seq.status != RequestStatus.WAITING or seq.slot is not None:
            raise ValueError(f"request {seq.request_id} is not a new waiting sequence")
        if seq.prompt_len + seq.max_tokens > self.limits.n_positions:
            raise ValueError(
                f"request {seq.request_id}: {seq.prompt_len} prompt + {seq.max_tokens} new tokens "
                f"exceed n_positions {self.limits.n_positions}"
            )
        seq.overtaken = 0
        if self.policy == "shortest_prompt_first":  # fcfs never reads the cost: no cache lookup
            cached = self._cached_tokens(seq) if self._cached_tokens is not None else 0
            seq.queue_cost = self.limits.prefill_cost(seq.prompt_len - cached)
        self.waiting.append(seq)

    def _next_waiting(self) -> int:
        """The index in ``waiting`` of the request the policy admits next (module docstring)."""
        if self.policy == "fcfs" or self.waiting[0].overtaken >= self.max_overtakes:
            return 0
        best = 0
        for index, seq in enumerate(self.waiting):
            if seq.queue_cost < self.waiting[best].queue_cost:  # strictly less: the first of equals
                best = index
        return best

    def _admit(self, index: int) -> Sequence:
        """Take ``waiting[index]`` out of the queue, into the lowest free slot; the requests that
        arrived before it have been overtaken once more."""
        for earlier in itertools.islice(self.waiting, index):
            earlier.overtaken += 1
        seq = self.waiting[index]
        del self.waiting[index]
        seq.slot = heapq.heappop(self._free_slots)
        seq.status = RequestStatus.RUNNING
        self.running[seq.slot] = seq
        return seq

    def schedule(self) -> SchedulerOutput:
        """Admit what fits, then list everything to run this step (see the module docstring)."""
        out = SchedulerOutput()
        budget = self.max_prefill_tokens
        if self.chunked:  # prompts begun in an earlier step come first, in admission order
            for seq in self.running.values():
                if budget == 0 or len(out.prefill) == self.max_prefill_slots:
                    break
                if not seq.prefill_done:
                    seq.prefill_end = seq.prefilled + min(seq.prompt_len - seq.prefilled, budget)
                    budget -= seq.prefill_end - seq.prefilled
                    out.prefill.append(seq)
        while self.waiting and self._free_slots and len(out.prefill) < self.max_prefill_slots:
            index = self._next_waiting()
            candidate = self.waiting[index]
            cached = self._cached_tokens(candidate) if self._cached_tokens is not None else 0
            if self.chunked:
                if budget == 0:
                    break
                end = cached + min(candidate.prompt_len - cached, budget)
                cost = end - cached
            else:
                end, cost = candidate.prompt_len, self.limits.prefill_cost(candidate.prompt_len - cached)
                if out.prefill and cost > budget:
                    break  # wait for the next step rather than let the budget pick who goes next
            seq = self._admit(index)
            budget = max(0, budget - cost)
            seq.prefill_end = end
            out.prefill.append(seq)
        out.prefill.sort(key=lambda seq: seq.slot)  # a chunk continued beside new admissions
        # Sequences admitted just now or still prefilling have no output token yet; everything else decodes.
        out.decode = [self.running[slot] for slot in sorted(self.running) if self.running[slot].output_ids]
        return out

    def finish(self, seq: Sequence) -> None:
        """Forget a finished or aborted sequence and free its slot. Idempotent."""
        if seq.slot is not None and self.running.get(seq.slot) is seq:
            del self.running[seq.slot]
            heapq.heappush(self._free_slots, seq.slot)
            seq.slot = None
        elif seq in self.waiting:
            self.waiting.remove(seq)

    def clear(self) -> list[Sequence]:
        """Drop every sequence (after a backend failure); returns them, slots freed."""
        dropped = list(self.waiting) + [self.running[slot] for slot in sorted(self.running)]
        for seq in dropped:
            seq.slot = None
        self.waiting.clear()
        self.running.clear()
        self._free_slots = list(range(self.limits.max_slots))
        return dropped
