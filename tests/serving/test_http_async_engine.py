"""``AsyncEngine`` in-process around a real tiny engine: the engine thread, aborts, back-pressure,
timeouts, step failures and shutdown.

``GatedEngine`` wraps the real engine so a test can hold the engine thread before a step (to
build a queue deterministically) or inject one failing step; everything else is the real engine.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from djl_python.config import load_config
from djl_python.engine.request import InvalidRequest, SamplingParams
from djl_python.loader import load_engine
from djl_python.api.errors import RequestTimeout, ServerOverloaded, ServerUnavailable
from djl_python.serving.async_engine import AsyncEngine
from djl_python.serving.metrics import ServingMetrics
from tests.serving.http_server import metric_value

LONG = SamplingParams(max_new_tokens=100, ignore_eos=True)


class GatedEngine:
    """The real engine, with a gate before each step and an optional injected step failure."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next_step = False

    def step(self):
        self.gate.wait()
        if self.fail_next_step:
            self.fail_next_step = False
            raise RuntimeError("injected backend failure")
        return self._engine.step()

    def __getattr__(self, name):
        return getattr(self._engine, name)


@pytest.fixture(scope="module")
def engine(tiny_llama):
    props = {"device": "cpu", "max_rolling_batch_size": "2", "n_positions": "128"}
    return load_engine(load_config(tiny_llama, properties=props, env={}))


@pytest.fixture
def gated(engine):
    gated = GatedEngine(engine)
    yield gated
    gated.gate.set()
    assert not engine.has_unfinished()  # every test leaves the engine clean (shutdown resets it)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def collect(ae: AsyncEngine, prompt_ids, params):
    return [out async for out in ae.generate(prompt_ids, params)]


def ids(engine, text: str) -> list[int]:
    return engine.tokenizer.encode(text)


def test_concurrent_requests_match_offline(engine, gated):
    prompts = ["The quick brown fox", "Hello world!", "Paris is"]
    expected = engine.generate(prompts, SamplingParams(max_new_tokens=6))

    async def main():
        ae = AsyncEngine(gated)
        ae.start()
        try:
            return await asyncio.gather(*(collect(ae, ids(engine, p), SamplingParams(max_new_tokens=6))
                                          for p in prompts))
        finally:
            await ae.shutdown()

    for outs, exp in zip(run(main()), expected):
        assert "".join(o.text for o in outs) == exp.text
        assert sum((o.token_ids for o in outs), []) == exp.token_ids
        assert outs[-1].finished and outs[-1].finish_reason == exp.finish_reason


def test_leaving_the_loop_aborts_the_request(engine, gated):
    metrics = ServingMetrics()

    async def main():
        ae = AsyncEngine(gated, metrics=metrics)
        ae.start()
        outputs = ae.generate(ids(engine, "Hello"), LONG)
        got = [await outputs.__anext__(), await outputs.__anext__()]
        await outputs.aclose()  # what a client disconnect does
        await until(lambda: ae.num_running == 0 and ae.num_waiting == 0)
        await ae.shutdown()
        return got

    got = run(main())
    assert all(not o.finished for o in got)
    assert metric_value(metrics.render().decode(), "djl_request_finished_total", finish_reason="abort") == 1


def test_full_waiting_queue_refuses_with_retry_after(engine, gated):
    async def main():
        ae = AsyncEngine(gated, max_waiting_requests=1, retry_after=3)
        ae.start()
        gated.gate.clear()  # the engine thread stops before its next step
        # Two requests are about to take the two free slots; the third really waits.
        first = [asyncio.ensure_future(collect(ae, ids(engine, f"Hello {i}"), SamplingParams(max_new_tokens=3)))
                 for i in range(3)]
        await until(lambda: len(ae._in_flight) == 3)  # all three submitted (queued or pending)
        with pytest.raises(ServerOverloaded) as refused:
            await ae.generate(ids(engine, "Hi"), SamplingParams(max_new_tokens=3)).__anext__()
        gated.gate.set()
        outs = (await asyncio.gather(*first))[-1]
        await ae.shutdown()
        return refused.value, outs

    refused, outs = run(main())
    assert refused.retry_after == 3 and "max_waiting_requests=1" in str(refused)
    assert outs[-1].finished and outs[-1].finish_reason in ("length", "eos_token")


def test_failing_step_ends_in_flight_requests_and_the_loop_keeps_serving(engine, gated):
    async def main():
        ae = AsyncEngine(gated)
        ae.start()
        streams = [ae.generate(ids(engine, p), LONG) for p in ("Hello", "Paris")]
        firsts = [await s.__anext__() for s in streams]  # both are running now
        gated.fail_next_step = True
        failed = [[first] + [out async for out in s] for first, s in zip(firsts, streams)]
        after = await collect(ae, ids(engine, "Hello"), SamplingParams(max_new_tokens=4, ignore_eos=True))
        await ae.shutdown()
        return failed, after

    failed, after = run(main())
    for outs in failed:
        assert outs[-1].finish_reason == "error" and "injected backend failure" in outs[-1].error
    assert after[-1].finish_reason == "length" and sum(len(o.token_ids) for o in after) == 4


def test_invalid_prompt_is_refused_without_disturbing_others(engine, gated):
    async def main():
        ae = AsyncEngine(gated)
        ae.start()
        good = asyncio.ensure_future(collect(ae, ids(engine, "Hello"), SamplingParams(max_new_tokens=5)))
        with pytest.raises(InvalidRequest) as bad:
            await collect(ae, list(range(3, 200)), SamplingParams(max_new_tokens=5))
        outs = await good
        await ae.shutdown()
        return bad.value, outs

    bad, outs = run(main())
    assert bad.field == "prompt"
    assert outs[-1].finished and outs[-1].finish_reason != "error"


def test_predict_timeout_aborts(engine, gated):
    async def main():
        ae = AsyncEngine(gated, predict_timeout=0.2)
        ae.start()
        gated.gate.clear()
        with pytest.raises(RequestTimeout):
            await collect(ae, ids(engine, "Hello"), LONG)
        gated.gate.set()
        await until(lambda: ae.num_running == 0 and ae.num_waiting == 0)
        await ae.shutdown()

    run(main())


def test_shutdown_ends_what_is_left_and_refuses_new_requests(engine, gated):
    async def main():
        ae = AsyncEngine(gated)
        ae.start()
        short = await collect(ae, ids(engine, "Hi"), SamplingParams(max_new_tokens=2, ignore_eos=True))
        outputs = ae.generate(ids(engine, "Hello"), LONG)
        await outputs.__anext__()
        gated.gate.clear()  # the long request cannot finish while the test holds the gate
        assert not await ae.drain(0.0)
        stopping = asyncio.ensure_future(ae.shutdown(0.0))
        await asyncio.sleep(0)  # shutdown has marked the loop as stopping and waits for the thread
        gated.gate.set()
        await stopping
        with pytest.raises(ServerUnavailable) as cut:  # a 503 for the client, not a generation error
            async for _ in outputs:
                pass
        with pytest.raises(ServerUnavailable):
            await ae.generate(ids(engine, "Hi"), SamplingParams()).__anext__()
        return short, cut.value

    short, cut = run(main())
    assert short[-1].finish_reason == "length"
    assert "shutting down" in str(cut)


def test_requests_about_to_take_a_free_slot_do_not_count_as_waiting(engine, gated):
    """A burst into idle slots is admitted; only requests beyond the free slots
    count against ``max_waiting_requests``. Two slots and a queue of one: three simultaneous
    requests are admitted (two take the slots, one waits), the fourth is refused."""
    assert engine.limits.max_slots == 2

    async def main():
        ae = AsyncEngine(gated, max_waiting_requests=1)
        ae.start()
        gated.gate.clear()  # nothing is admitted to a slot until the gate opens: the whole burst is queued
        params = SamplingParams(max_new_tokens=2)
        streams = [ae.generate(ids(engine, f"Hello {i}"), params) for i in range(4)]
        firsts = [asyncio.ensure_future(s.__anext__()) for s in streams[:3]]
        await until(lambda: len(ae._in_flight) == 3)  # all three submitted (queued or pending)
        with pytest.raises(ServerOverloaded):
            await streams[3].__anext__()
        gated.gate.set()
        got = [await f for f in firsts]
        for s in streams[:3]:
            async for _ in s:
                pass
        await ae.shutdown()
        return got

    assert all(out.request_id for out in run(main()))


def test_a_consumer_that_stops_taking_outputs_is_aborted_past_max_unsent_tokens(engine, gated):
    """The consumer takes one output and stops (a client whose writes
    block); once more than ``max_unsent_tokens`` tokens wait, the request is aborted and its slot
    freed long before its 100 tokens; on resuming, the consumer gets what was queued, then
    ``ClientTooSlow``."""
    from djl_python.api.errors import ClientTooSlow

    metrics = ServingMetrics()

    async def main():
        ae = AsyncEngine(gated, metrics=metrics, max_unsent_tokens=4)
        ae.start()
        outputs = ae.generate(ids(engine, "Hello"), LONG)
        await outputs.__anext__()
        await until(lambda: ae.num_running == 0 and ae.num_waiting == 0)
        got = []
        with pytest.raises(ClientTooSlow, match="max_unsent_tokens=4"):
            async for out in outputs:
                got.append(out)
        await ae.shutdown()
        return got

    got = run(main())
    assert 4 <= sum(len(o.token_ids) for o in got) <= 6 and not any(o.finished for o in got)
    assert metric_value(metrics.render().decode(), "djl_request_finished_total", finish_reason="abort") == 1
