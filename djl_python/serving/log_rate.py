"""At most one log line per kind per interval from the server's own transport loggers.

A hostile client can make uvicorn and asyncio log once per bad request or failed ``accept``:
thousands of lines a second, each with a traceback, which fill the disk and bury the lines
that matter. ``limit_log_rate`` installs ``RateLimitFilter`` on those loggers: a record whose
kind (logger, level and message template) was emitted within the last ``interval`` seconds is
dropped and counted, and the next one of that kind that passes says how many were dropped.
Records of other kinds are never held back by a flood of one kind.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

INTERVAL = 10.0
LOGGERS = ("uvicorn.error", "asyncio", "djl_python.serving.connections")
_MAX_KINDS = 1024


class RateLimitFilter(logging.Filter):
    def __init__(self, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}  # kind -> (last emitted, dropped since)

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        last, dropped = self._kinds.get(kind, (float("-inf"), 0))
        if now - last < self.interval:
            self._kinds[kind] = (last, dropped + 1)
            return False
        if len(self._kinds) >= _MAX_KINDS:
            self._kinds.clear()
        self._kinds[kind] = (now, 0)
        if dropped:
            record.msg = f"{record.msg} [{dropped} more like this in the last {now - last:.0f}s not logged]"
        return True


def limit_log_rate(interval: float = INTERVAL) -> None:
    """Install one ``RateLimitFilter`` on each of ``LOGGERS`` (once per process)."""
    for name in LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, RateLimitFilter) for f in log.filters):
            log.addFilter(RateLimitFilter(interval))
