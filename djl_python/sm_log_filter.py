"""``SMLogFilter``: DJL's filter for SageMaker telemetry logs (``djl_python/sm_log_filter.py`` in DJL v0.26-v0.28).

DJL's engine script attaches it to a file handler at
``$SM_TELEMETRY_LOG_REV_2022_12``. It passes only records whose message starts
with ``ModelServerError:``, ``UserScriptError:`` or ``SysHealth:`` (DJL's
telemetry markers); DJL also rewrites them into its metric-line format, which
we do not reproduce.
"""

from __future__ import annotations

import logging

SM_LOG_MARKERS = ("ModelServerError", "UserScriptError", "SysHealth")


class SMLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return isinstance(record.msg, str) and record.msg.startswith(tuple(m + ":" for m in SM_LOG_MARKERS))
