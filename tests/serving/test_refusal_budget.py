"""``RefusalBudget``: a client's refused bodies take a bounded share of the parsing thread.

The budget's clock and sleep are the test's, so every wait is exact and instant; the
HTTP test shows the server charges refused bodies to their client and never an accepted one.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from djl_python.serving.refusals import RefusalBudget
from tests.serving.http_server import metric_value, metrics


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture()
def fake(monkeypatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr("djl_python.serving.refusals.asyncio.sleep", fake.sleep)
    return fake


def test_the_level_leaks_at_the_share_and_never_goes_negative(fake):
    budget = RefusalBudget(share=0.1, burst=1.0, clock=fake.clock)
    budget.charge("a", 2.0)
    fake.now = 5.0
    assert budget.level("a") == pytest.approx(1.5)
    budget.charge("a", 0.5)
    assert budget.level("a") == pytest.approx(2.0)
    fake.now = 100.0
    assert budget.level("a") == 0.0 and budget.level("never-seen") == 0.0


def test_a_client_over_its_burst_waits_until_it_is_back_within_it_and_others_do_not(fake):
    budget = RefusalBudget(share=0.1, burst=1.0, clock=fake.clock)
    budget.charge("junk", 3.0)

    async def enter(client: str) -> float:
        async with budget.turn(client):
            return fake.now

    assert asyncio.run(enter("polite")) == 0.0 and fake.sleeps == []
    entered = asyncio.run(enter("junk"))
    assert fake.sleeps == [pytest.approx(20.0)]  # (3.0 - 1.0) / 0.1
    assert entered == pytest.approx(20.0) and budget.level("junk") == pytest.approx(1.0)


def test_wait_holds_a_client_over_its_burst_and_caps_its_waiting_requests(fake):
    from djl_python.serving.refusals import MAX_WAITERS, TooManyWaiting

    budget = RefusalBudget(share=0.1, burst=1.0, clock=fake.clock)
    budget.charge("junk", 2.0)
    asyncio.run(budget.wait("polite"))
    assert fake.sleeps == []
    asyncio.run(budget.wait("junk"))
    assert fake.sleeps == [pytest.approx(10.0)]
    budget.charge("junk", 5.0)

    gate = asyncio.Event()

    async def parked(seconds: float) -> None:  # waiters stay parked until the gate opens
        await gate.wait()
        fake.now += seconds

    async def many() -> TooManyWaiting:
        waiting = [asyncio.ensure_future(budget.wait("junk")) for _ in range(MAX_WAITERS)]
        tick = asyncio.get_running_loop().create_future()  # one loop turn (asyncio.sleep is patched)
        asyncio.get_running_loop().call_soon(tick.set_result, None)
        await tick
        with pytest.raises(TooManyWaiting) as refused:
            await budget.wait("junk")
        gate.set()
        await asyncio.gather(*waiting)
        return refused.value

    import djl_python.serving.refusals as refusals

    refusals.asyncio.sleep = parked
    try:
        refused = asyncio.run(many())
    finally:
        refusals.asyncio.sleep = fake.sleep
    assert refused.retry_after >= 1 and "retry" in str(refused)


def test_within_the_burst_nobody_waits(fake):
    budget = RefusalBudget(share=0.1, burst=1.0, clock=fake.clock)
    budget.charge("a", 1.0)

    async def enter() -> None:
        async with budget.turn("a"):
            pass

    asyncio.run(enter())
    assert fake.sleeps == []


def test_one_client_parses_one_body_at_a_time_so_a_charge_is_seen_by_its_next_body():
    budget = RefusalBudget(share=0.1, burst=0.0)
    order: list[str] = []

    async def body(name: str, charge: float) -> None:
        async with budget.turn("a"):
            order.append(f"{name} in")
            await asyncio.sleep(0)
            budget.charge("a", charge)
            order.append(f"{name} out")

    async def both() -> None:
        first = asyncio.ensure_future(body("first", 0.0))
        second = asyncio.ensure_future(body("second", 0.0))
        await asyncio.gather(first, second)

    asyncio.run(both())
    assert order == ["first in", "first out", "second in", "second out"]


def test_parameters_are_checked():
    with pytest.raises(ValueError):
        RefusalBudget(share=0.0)
    with pytest.raises(ValueError):
        RefusalBudget(burst=-1.0)


def test_the_server_charges_refused_bodies_and_never_accepted_ones(server):
    charged = lambda: metric_value(metrics(server), "djl_refused_parse_seconds_total")  # noqa: E731
    before = charged()
    ok = httpx.post(server.url + "/invocations", json={"inputs": "Hello", "parameters": {"max_new_tokens": 2}},
                    timeout=60)
    assert ok.status_code == 200 and charged() == before
    junk = '{"messages": [{"role": "user", "content": "hi"}], "x": [%s]}' % ",".join(["[]"] * 50_000)
    refused = httpx.post(server.url + "/v1/chat/completions", content=junk,
                         headers={"content-type": "application/json"}, timeout=60)
    assert refused.status_code == 400 and "x" in refused.text
    assert charged() > before
