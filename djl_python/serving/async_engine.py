"""The bridge between the HTTP event loop and the (synchronous, single-threaded) engine.

The HTTP transport's only way to the engine; it knows token ids and
``RequestOutput``s, never an API. Threads:

* ONE dedicated thread owns the ``Engine`` and is the only caller of its methods
  (the engine is not thread-safe). It loops: apply queued commands (add/abort),
  run ``engine.step()``, deliver outputs. With nothing to do it sleeps on a
  condition variable; there is no busy spin. Model work releases the GIL, so the
  event loop keeps serving while a step runs.
* The event loop never calls the engine and never waits on it: ``generate``
  appends a command under a short lock and then awaits its own per-request
  ``asyncio.Queue``, which the engine thread fills with
  ``loop.call_soon_threadsafe``.

Invariants:

* Every admitted request receives exactly one final ``RequestOutput``
  (``finished=True``) or one exception, unless its consumer aborted it first.
* A consumer that stops iterating (client disconnect, cancellation, timeout)
  aborts its engine request in ``generate``'s ``finally``; the engine frees the
  slot on its next step.
* If ``engine.step()`` raises, every in-flight request ends with
  ``finish_reason="error"``, the engine is ``reset`` and the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Optional

from djl_python.api.errors import ClientTooSlow, RequestTimeout, ServerOverloaded, ServerUnavailable
from djl_python.engine.core import EngineCore
from djl_python.engine.request import FinishReason, RequestOutput, SamplingParams
from djl_python.serving.metrics import ServingMetrics

logger = logging.getLogger(__name__)


_TIMED_OUT = RuntimeError("predict_timeout")  # sentinel put in a request's queue by its timer


@dataclass(eq=False)
class _Stream:
    """Where the engine thread sends one request's outputs, plus its timing for metrics."""

    request_id: str
    loop: asyncio.AbstractEventLoop
    queue: "asyncio.Queue[RequestOutput | BaseException]"
    arrival: float
    first_token_at: Optional[float] = None
    unsent: int = 0  # event loop only: tokens delivered to the queue and not yet taken by the consumer
    too_slow: bool = False  # event loop only: aborted because its consumer stopped reading

    def put(self, item: RequestOutput | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass


class AsyncEngine:
    """Runs an ``Engine`` in its own thread and exposes it to asyncio.

    Args:
        engine: the engine, kept as ``core`` (``add_request``, ``abort``, ``step``, ``has_unfinished``,
            ``num_running``, ``num_waiting``, ``reset``). Owned by this object from ``start()``.
        max_waiting_requests: bound on requests waiting for a slot (engine queue plus
            commands not yet applied, less the free slots they are about to take); beyond
            it ``generate`` raises ``ServerOverloaded``.
        predict_timeout: seconds a request may take end to end; ``None`` or 0 disables it.
        metrics: where token and latency metrics go (optional).
        retry_after: the ``Retry-After`` seconds suggested when overloaded.
        max_unsent_tokens: a consumer that lets more generated tokens than this pile up unread
            (a streaming client that stopped reading: its writes block, so it stops taking
            outputs) is aborted, freeing its slot, and gets ``ClientTooSlow`` when it resumes.
            ``None``: no bound.
    """

    def __init__(
        self,
        engine: EngineCore,
        *,
        max_waiting_requests: int = 256,
        predict_timeout: float | None = 240.0,
        metrics: ServingMetrics | None = None,
        retry_after: int = 1,
        max_unsent_tokens: int | None = None,
    ) -> None:
        self.core = engine
        self.max_unsent_tokens = max_unsent_tokens
        self.max_waiting_requests = max_waiting_requests
        self.predict_timeout = predict_timeout or None
        self.metrics = metrics
        self.retry_after = retry_after
        self._cond = threading.Condition()
        self._commands: deque[tuple[str, Any]] = deque()  # guarded by _cond
        self._pending_adds = 0  # guarded by _cond
        self._num_running = 0  # snapshots written by the engine thread under _cond
        self._num_waiting = 0
        self._max_slots = engine.limits.max_slots
        self._stopping = False
        self._accepting = False
        self._streams: dict[str, _Stream] = {}  # engine thread only
        self._in_flight: set[str] = set()  # event loop only
        self._thread: threading.Thread | None = None
        self._cache_seen = (0, 0)  # the prefix cache's counters already added to the metrics

    # ------------------------------------------------------------------ event-loop side
    @property
    def num_running(self) -> int:
        return self._num_running

    @property
    def num_waiting(self) -> int:
        return self._num_waiting

    @property
    def accepting(self) -> bool:
        return self._accepting and self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the engine thread; idempotent."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="djl-engine-loop", daemon=True)
            self._thread.start()
            self._accepting = True

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[RequestOutput]:
        """Submit a request and yield its outputs until the final one (``finished=True``).

        Raises (at the first iteration): ``ServerUnavailable``, ``ServerOverloaded``,
        ``InvalidRequest`` (the engine refused the prompt, e.g. too long, or its constraint does not
        compile) and, at any
        point, ``RequestTimeout``. Leaving the loop early aborts the request.
        """
        if not self.accepting:
            raise ServerUnavailable("the server is not accepting requests (starting or shutting down)")
        rid = request_id or uuid.uuid4().hex
        matcher = None
        if params.constraint is not None:
            with self._cond:  # an overloaded server refuses before spending a compile on the request
                self._check_room()
            # Compiled here, in a worker thread: a large schema never stalls the engine loop, and one
            # that cannot compile is refused (InvalidRequest) before it is queued.
            matcher = await asyncio.to_thread(self.core.compile_constraint, params.constraint)
        stream = _Stream(rid, asyncio.get_running_loop(), asyncio.Queue(), time.monotonic())
        with self._cond:
            self._check_room()
            self._commands.append(("add", (stream, list(prompt_ids), params, matcher)))
            self._pending_adds += 1
            self._cond.notify()
        self._in_flight.add(rid)
        timer = None
        if self.predict_timeout:
            # A sentinel in the queue rather than asyncio.wait_for, which (before Python 3.12) can
            # swallow a cancellation that races with a completed get, so a disconnect would not abort.
            timer = stream.loop.call_later(self.predict_timeout, stream.queue.put_nowait, _TIMED_OUT)
        finished = False
        try:
            while not finished:
                item = await stream.queue.get()
                if item is _TIMED_OUT:
                    raise RequestTimeout(f"request did not finish within predict_timeout={self.predict_timeout:g}s")
                if isinstance(item, BaseException):
                    finished = True  # refused at admission: the engine holds nothing for it
                    raise item
                stream.unsent -= len(item.token_ids)
                finished = item.finished
                yield item
        finally:
            if timer is not None:
                timer.cancel()
            self._in_flight.discard(rid)
            if not finished:
                self.abort(rid)

    def _check_room(self) -> None:
        """``ServerOverloaded`` when the waiting queue is full (under ``_cond``)."""
        if self._waiting_for_a_slot() >= self.max_waiting_requests:
            raise ServerOverloaded(
                f"too many requests waiting (max_waiting_requests={self.max_waiting_requests})", self.retry_after)

    def _waiting_for_a_slot(self) -> int:
        """Requests that would still wait for a slot once every free slot is taken (under ``_cond``).

        The engine's queue and the adds not yet applied both hold requests that the next step
        admits at once while slots are free; only those beyond the free slots really wait, so
        only they count against ``max_waiting_requests`` (a burst into an idle server is admitted).
        """
        free = max(self._max_slots - self._num_running, 0)
        return max(self._num_waiting + self._pending_adds - free, 0)

    def abort(self, request_id: str) -> None:
        """Ask the engine thread to abort a request; a no-op for unknown or finished ids."""
        with self._cond:
            self._commands.append(("abort", request_id))
            self._cond.notify()

    async def drain(self, grace_seconds: float) -> bool:
        """Stop accepting requests and wait up to ``grace_seconds`` for in-flight ones.

        Returns True when every in-flight request finished in time.
        """
        self._accepting = False
        deadline = time.monotonic() + max(grace_seconds, 0.0)
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return not self._in_flight

    async def shutdown(self, grace_seconds: float = 0.0) -> None:
        """Drain for up to ``grace_seconds``, then abort what is left and stop the thread."""
        await self.drain(grace_seconds)
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    # ------------------------------------------------------------------ engine-thread side
    def _run(self) -> None:
        try:
            self._loop()
            message = "the server is shutting down"
        except Exception as err:  # noqa: BLE001 - a bug in the loop itself: fail loudly, never hang clients
            logger.exception("the engine loop crashed")
            message = f"the engine loop stopped: {type(err).__name__}: {err}"
        self._accepting = False
        if self._stopping:  # shut down: what is left is refused as unavailable (503, or in-band on streams)
            self._refuse_all(message)
        else:
            self._fail_all(message)
        with self._cond:  # adds queued meanwhile get an answer too
            leftovers = [payload for kind, payload in self._commands if kind == "add"]
            self._commands.clear()
        for stream, _, _ in leftovers:
            stream.put(ServerUnavailable(message))

    def _loop(self) -> None:
        engine = self.core
        while True:
            with self._cond:
                while not self._commands and not self._stopping and not engine.has_unfinished():
                    self._cond.wait()
                if self._stopping:
                    return
                commands = list(self._commands)
                self._commands.clear()
            self._apply(commands)
            if engine.has_unfinished():
                started = time.monotonic()
                try:
                    outputs = engine.step()
                except Exception as err:  # noqa: BLE001 - one bad step must not kill the server
                    logger.error("engine step failed; failing %d request(s)", len(self._streams), exc_info=err)
                    self._fail_all(f"generation failed: {type(err).__name__}: {err}")
                else:
                    self._deliver(outputs, started)
            self._snapshot()

    def _apply(self, commands: list[tuple[str, Any]]) -> None:
        adds = 0
        for kind, payload in commands:
            if kind == "add":
                adds += 1
                stream, prompt_ids, params, matcher = payload
                try:
                    if matcher is None:
                        self.core.add_request(prompt_ids, params, request_id=stream.request_id)
                    else:
                        self.core.add_request(prompt_ids, params, request_id=stream.request_id, matcher=matcher)
                except Exception as err:  # noqa: BLE001 - InvalidRequest and anything else go to the caller
                    stream.put(err)
                else:
                    self._streams[stream.request_id] = stream
            elif self._streams.pop(payload, None) is not None:
                try:
                    self.core.abort(payload)
                except Exception:  # noqa: BLE001 - it may have finished in the meantime
                    logger.debug("abort of %s ignored", payload, exc_info=True)
                if self.metrics is not None:  # its final output goes nowhere, so count it here
                    self.metrics.request_finished.labels("abort").inc()
        with self._cond:
            self._pending_adds -= adds
        self._snapshot()

    def _snapshot(self) -> None:
        with self._cond:
            self._num_running = self.core.num_running
            self._num_waiting = self.core.num_waiting
        if self.metrics is not None:
            self.metrics.num_running.set(self._num_running)
            self.metrics.num_waiting.set(self._num_waiting)
            cache = self.core.prefix_cache
            if cache is not None and cache.prompt_tokens != self._cache_seen[0]:
                queried, hits = cache.prompt_tokens, cache.hit_tokens
                self.metrics.prefix_cache_queries.inc(queried - self._cache_seen[0])
                self.metrics.prefix_cache_hits.inc(hits - self._cache_seen[1])
                self.metrics.prefix_cache_hit_rate.set(cache.hit_rate)
                self._cache_seen = (queried, hits)

    def _deliver(self, outputs: list[RequestOutput], step_started: float) -> None:
        """Hand one step's outputs to their consumers: one ``call_soon_threadsafe`` per event
        loop per step (not per output), so a step of 32 streams wakes the loop once."""
        now = time.monotonic()
        m = self.metrics
        batches: dict[asyncio.AbstractEventLoop, list[tuple[_Stream, RequestOutput]]] = {}
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is None:  # aborted by its consumer; nobody is listening
                continue
            if out.token_ids and stream.first_token_at is None:
                stream.first_token_at = now
                if m is not None:
                    m.time_to_first_token.observe(now - stream.arrival)
                    m.queue_time.observe(max(step_started - stream.arrival, 0.0))
            if m is not None and out.token_ids:
                m.generation_tokens.inc(len(out.token_ids))
            if out.finished:
                del self._streams[out.request_id]
                if m is not None:
                    self._record_finished(m, stream, out, now)
            batches.setdefault(stream.loop, []).append((stream, out))
        for loop, items in batches.items():
            try:
                loop.call_soon_threadsafe(self._put_all, items)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                pass

    def _put_all(self, items: list[tuple[_Stream, RequestOutput]]) -> None:
        """Runs on the event loop: fill each request's queue, in the engine's order, and abort
        a request whose consumer has stopped taking outputs (``max_unsent_tokens``)."""
        limit = self.max_unsent_tokens
        for stream, item in items:
            if stream.too_slow:
                continue  # aborted; nothing more goes to a reader that does not read
            stream.queue.put_nowait(item)
            stream.unsent += len(item.token_ids)
            if limit and stream.unsent > limit and not item.finished:
                stream.too_slow = True
                logger.warning("aborting request %s: its client left %d generated tokens unread "
                               "(max_unsent_tokens=%d)", stream.request_id, stream.unsent, limit)
                self.abort(stream.request_id)
                stream.queue.put_nowait(ClientTooSlow(
                    f"the client did not read its output: more than max_unsent_tokens={limit} tokens were unsent"))

    @staticmethod
    def _record_finished(m: ServingMetrics, stream: _Stream, out: RequestOutput, now: float) -> None:
        m.request_finished.labels(out.finish_reason or "unknown").inc()
        m.e2e_latency.observe(now - stream.arrival)
        m.prompt_tokens.inc(out.prompt_tokens)
        if stream.first_token_at is not None and out.generated_tokens > 1:
            m.time_per_output_token.observe((now - stream.first_token_at) / (out.generated_tokens - 1))

    def _refuse_all(self, message: str) -> None:
        """End every in-flight request with ``ServerUnavailable`` (the server is going away: a
        503, not a generation error) and reset the engine."""
        try:
            self.core.reset(message)
        except Exception:  # noqa: BLE001 - stopping anyway
            logger.exception("engine reset failed")
        for stream in self._streams.values():
            stream.put(ServerUnavailable(message))
            if self.metrics is not None:
                self.metrics.request_finished.labels("abort").inc()
        self._streams.clear()

    def _fail_all(self, message: str) -> None:
        """End every in-flight request with ``finish_reason="error"`` and reset the engine."""
        try:
            outputs = self.core.reset(message) or []
        except Exception:  # noqa: BLE001 - nothing more can be done; keep serving
            logger.exception("engine reset failed")
            outputs = []
        self._deliver(outputs, time.monotonic())
        for stream in self._streams.values():  # anything reset did not report
            stream.put(RequestOutput(stream.request_id, [], "", finished=True, finish_reason=FinishReason.ERROR,
                                      error=message))
            if self.metrics is not None:
                self.metrics.request_finished.labels("error").inc()
        self._streams.clear()
