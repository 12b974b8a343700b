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
  ``burst + share * t`` seconds plus one body's parse time (bounded by
  ``max_request_bytes``).
* A client whose bodies are accepted is never charged and never waits: the
  lock only serialises its parses, which the transport's single parsing thread
  serialises anyway.
* Waiting costs nothing but the connection: the body is read only after the
  wait, so a throttled client holds no body in memory.

Behind a proxy every client has the proxy's address and shares one account:
one client's junk then delays the others' parses (never refuses them), which
still leaves generation at its speed. docs/deployment.md says so.
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
_LOG_EVERY = 60.0  # seconds between two log lines about one client's waiting
_MAX_IDLE_ACCOUNTS = 4096  # accounts at level zero beyond this many are forgotten


@dataclass
class _Account:
    level: float = 0.0  # refused-parse seconds, as of ``stamp``
    stamp: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    logged: float = float("-inf")  # when its waiting was last logged


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

    def level(self, client: str) -> float:
        """The client's refused-parse seconds not yet leaked away (0 for an unknown client)."""
        account = self._accounts.get(client)
        return 0.0 if account is None else self._level(account, self._clock())

    def _level(self, account: _Account, now: float) -> float:
        return max(0.0, account.level - (now - account.stamp) * self.share)

    @contextlib.asynccontextmanager
    async def turn(self, client: str) -> AsyncIterator[None]:
        """Hold the client's turn: wait while its level is over ``burst``, then run the body's
        read and parse inside the ``async with``."""
        account = self._accounts.get(client)
        if account is None:
            self._forget_idle()
            account = self._accounts.setdefault(client, _Account(stamp=self._clock()))
        async with account.lock:
            while True:
                excess = self._level(account, self._clock()) - self.burst
                if excess <= 0:
                    break
                if self._clock() - account.logged >= _LOG_EVERY:
                    account.logged = self._clock()
                    logger.warning("client %s: its refused request bodies took over %.1fs to read and parse; its next "
                                   "bodies wait, so that at most %.0f%% of a core goes to refusing them (logged "
                                   "once a minute)",
                                   client, self.burst, 100 * self.share)
                await asyncio.sleep(excess / self.share)
            yield

    def charge(self, client: str, seconds: float) -> None:
        """Add the parse time of one refused body to the client's account."""
        now = self._clock()
        account = self._accounts.setdefault(client, _Account(stamp=now))
        account.level = self._level(account, now) + max(0.0, seconds)
        account.stamp = now

    def _forget_idle(self) -> None:
        if len(self._accounts) < _MAX_IDLE_ACCOUNTS:
            return
        now = self._clock()
        for client in [c for c, a in self._accounts.items() if not a.lock.locked() and self._level(a, now) == 0.0]:
            del self._accounts[client]
