"""A per-client budget for the work spent on request bodies that were refused.

Parsing, validating and tokenising a body holds the interpreter lock for as
long as it takes (``json.loads`` and pydantic never release it), and the engine
thread needs that lock between its tensor operations. A client that loops
bodies which only earn a 4xx never holds a slot, so no queue or slot limit
applies to it, yet every such body stalls all generation for its parse time.

``RefusalBudget`` bounds that cost per client (the peer address). Each client
has an account whose level is the cost of its refused bodies (the seconds
spent reading each body plus the parsing thread's CPU seconds), leaking at
``share`` seconds per second. Invariants:

* A client's bodies are parsed one at a time (one lock per account), and a
  parse starts only while the level is at most ``burst``; so, over any window
  of ``t`` seconds, one client's refused bodies take at most
  ``burst + share * t`` seconds plus one body's cost (bounded by
  ``max_request_bytes``).
* A client whose bodies are accepted is never charged and never waits: the
  lock is held only around the parse, which the transport's single parsing
  thread serialises anyway; reading a body never holds it.
* Waiting costs nothing but the connection: a client over its burst waits
  (``wait``) before its body is read, so a throttled client holds no body in
  memory; at most ``MAX_WAITERS`` of its requests wait, further ones are
  refused with 429 at once.

Behind a proxy every client has the proxy's address and shares one account:
one client's junk then delays the others' parses, and past ``MAX_WAITERS``
waiting requests refuses them with 429, while generation keeps its speed.
docs/deployment.md says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

logger = logging.getLogger(__name__)

SHARE = 0.1  # refused parsing may take a tenth of one core per client, over time
BURST = 1.0  # seconds of refused parsing a client may spend at once before it waits
MAX_WAITERS = 64  # requests of one client waiting for its budget; more get 429
_LOG_EVERY = 60.0  # seconds between two log lines about one client's waiting
_MAX_IDLE_ACCOUNTS = 4096  # accounts at level zero beyond this many are forgotten


@dataclass
class _Account:
    level: float = 0.0  # refused-parse seconds, as of ``stamp``
    stamp: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    logged: float = float("-inf")  # when its waiting was last logged
    waiters: int = 0


class RefusalBudget:
    """Per-client accounts of refused-body parse time; see the module docstring."""

    def __init__(self, share: float = SHARE, burst: float = BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if share <= 0 or burst < 0:
            raise ValueError("share must be positive and burst non-negative")
        self.share = share
        self.burst = burst
        self._clock = clock
        self._accounts: dict[str, _Account] = {}
        self._next_forget = _MAX_IDLE_ACCOUNTS

    def level(self, client: str) -> float:
        """The client's refused-parse seconds not yet leaked away (0 for an unknown client)."""
        account = self._accounts.get(client)
        return 0.0 if account is None else self._level(account, self._clock())

    def _level(self, account: _Account, now: float) -> float:
        return max(0.0, account.level - (now - account.stamp) * self.share)

    def _account(self, client: str) -> _Account:
        account = self._accounts.get(client)
        if account is None:
            self._forget_idle()
            account = self._accounts.setdefault(client, _Account(stamp=self._clock()))
        return account

    async def wait(self, client: str) -> None:
        """Return once the client's level is at most ``burst`` (at once for most clients).
        Raises ``TooManyWaiting`` when ``MAX_WAITERS`` of its requests already wait."""
        account = self._account(client)
        if self._level(account, self._clock()) <= self.burst:
            return
        if account.waiters >= MAX_WAITERS:
            raise TooManyWaiting(max(1, round((self._level(account, self._clock()) - self.burst) / self.share)))
        account.waiters += 1
        try:
            await self._wait_level(client, account)
        finally:
            account.waiters -= 1

    async def _wait_level(self, client: str, account: _Account) -> None:
        while True:
            excess = self._level(account, self._clock()) - self.burst
            if excess <= 0:
                return
            if self._clock() - account.logged >= _LOG_EVERY:
                account.logged = self._clock()
                logger.warning("client %s: its refused request bodies took over %.1fs to read and parse; its next "
                               "bodies wait, so that at most %.0f%% of a core goes to refusing them (logged "
                               "once a minute)", client, self.burst, 100 * self.share)
            await asyncio.sleep(excess / self.share)

    @contextlib.asynccontextmanager
    async def turn(self, client: str) -> AsyncIterator[None]:
        """Hold the client's turn to parse: one parse at a time per client, each starting while
        its level is at most ``burst``; run the parse inside the ``async with``."""
        account = self._account(client)
        async with account.lock:
            await self._wait_level(client, account)
            yield

    def charge(self, client: str, seconds: float) -> None:
        """Add the parse time of one refused body to the client's account."""
        now = self._clock()
        account = self._account(client)
        account.level = self._level(account, now) + max(0.0, seconds)
        account.stamp = now

    def _forget_idle(self) -> None:
        """Drop accounts at level zero, at most once per doubling of their number (amortised)."""
        if len(self._accounts) < self._next_forget:
            return
        now = self._clock()
        for client in [c for c, a in self._accounts.items()
                       if not a.lock.locked() and not a.waiters and self._level(a, now) == 0.0]:
            del self._accounts[client]
        self._next_forget = max(_MAX_IDLE_ACCOUNTS, 2 * len(self._accounts))


class TooManyWaiting(Exception):
    """A client over its budget already has ``MAX_WAITERS`` requests waiting (a 429)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests waiting after refused bodies; retry in {retry_after}s")
        self.retry_after = retry_after
