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

**An empty last record is lost on 0.29-0.31.** Their ``RollingBatch`` drops a
record whose ``data`` is empty and that has no ``code`` before it reads
``last`` (v0.29.0 ``RollingBatch.java:356-359``, still so on the 0.31.0-dlc
branch; fixed by djl-serving ed821e5e, ``&& !last``, from 0.32), so such a request never ends and
its client waits for Java's timeout. Every output format but ``none`` ends
with text (the closing JSON, ``generated_text``, the SSE end), so only
``none`` can end empty: a generation that stops on EOS or a stop id. For it,
on those releases, each step's text is sent one step late, so the last record
carries the last text (``hold_back``). A generation whose whole text is empty
still ends with an empty record there.
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


def must_hold_back(protocol: DjlProtocol, output_formatter: str) -> bool:
    """Whether this request's text goes one step late (see the module docstring)."""
    return protocol.drops_empty_last_record and output_formatter == "none"


def hold_back(held: str, data: str, last: bool) -> tuple[str, str]:
    """``(text to send now, text to keep)`` given what was kept and this step's text."""
    if last:
        return held + data, ""
    if not data:
        return "", held
    return held, data


def failure_record(error: str, protocol: DjlProtocol, code: int = FAILED_CODE) -> bytes:
    """A request that failed on its own (bad body, bad parameter): last record, ``code`` and message."""
    if protocol.json_records:
        return _json({"data": json.dumps({"code": code, "error": error}), "last": True})
    return Output.binary_encode({"data": "", "last": True, "code": code, "error": error})


def _json(value: dict) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")
