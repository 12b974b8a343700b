"""Per-request records of a rolling-batch reply, in the shape each DJL release's handler sends.

Java reads content item ``i`` of the reply as request ``i``'s record
(``RollingBatch.run`` / ``Request.addResponse``, djl-serving
``engines/python/src/main/java/ai/djl/python/engine/RollingBatch.java``):

* bytes starting with ``{``: a JSON object; ``last`` is read with
  ``getAsBoolean``, ``data`` with ``getAsString``; if ``data`` itself parses as
  a JSON object with ``code`` and ``error`` they become the response's code
  and message. The TNX handler of v0.26.0/v0.27.0 answers this way, and
  reports a failed request as ``{"data": "{\"code\": 424, \"error\": ...}",
  "last": true}`` (``transformers_neuronx.py``, ``inference``).
* anything else: ``int16 n`` and ``n`` (key, value) strings; ``data``,
  ``last`` (``"true"`` case-insensitively), ``code`` and ``error``. No value
  may be null (``Objects.requireNonNull``). With ``code`` set Java ends the
  stream with ``{"code": <int>, "error": ...}``. The v0.28.0 TNX handler
  answers this way and reports a failed request as ``{"data": "", "last":
  True, "code": 424, "error": ...}`` with ``batch_{i}_Content-Type:
  application/json``.

424 is what the real handler uses for every per-request failure, so Java
reports ours exactly as it reports its own.
"""

from __future__ import annotations

import json

from djl_python.djl.protocol import DjlProtocol
from djl_python.outputs import Output

FAILED_CODE = 424
ERROR_CONTENT_TYPE = "application/json"


def token_record(data: str, last: bool, protocol: DjlProtocol) -> bytes:
    """Request's text for this step (possibly empty) and whether it is its last record."""
    if protocol.json_records:
        return _json({"data": data, "last": bool(last)})
    return Output.binary_encode({"data": data, "last": bool(last)})


def failure_record(error: str, protocol: DjlProtocol, code: int = FAILED_CODE) -> bytes:
    """A request that failed on its own (bad body, bad parameter): last record, ``code`` and message."""
    if protocol.json_records:
        return _json({"data": json.dumps({"code": code, "error": error}), "last": True})
    return Output.binary_encode({"data": "", "last": True, "code": code, "error": error})


def _json(value: dict) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")
