"""The contract every renderer keeps, so that a transport drives all APIs alike.

A renderer turns ONE request's engine outputs into the bytes of its response:

* streamed: ``feed(out)`` for each ``RequestOutput`` in order until ``done``
  (each returns the next fragment, "" when there is nothing to send yet);
  ``fail(error)`` instead when the stream breaks (e.g. ``predict_timeout``),
  which ends it in-band; ``end()`` once at the very end (OpenAI's
  ``data: [DONE]``);
* whole: ``whole(outputs)`` returns ``(body, status)`` for all outputs, or
  raises ``ApiError`` when the API reports a failed generation with its error
  body (OpenAI, TGI).

Renderers are pure: no tokenizer (token texts come in ``RequestOutput``), no
I/O, no transport.
"""

from __future__ import annotations

import json
import math
from typing import Any, Protocol, Sequence

from djl_python.api.errors import ApiError
from djl_python.engine.request import RequestOutput


class Renderer(Protocol):
    content_type: str  # of the response (streamed or whole, as the request asked)
    stream: bool
    done: bool

    def feed(self, out: RequestOutput) -> str: ...

    def fail(self, error: ApiError) -> str: ...

    def end(self) -> str: ...

    def whole(self, outputs: Sequence[RequestOutput]) -> tuple[str, int]: ...


def dumps(value: Any) -> str:
    """``value`` as strict JSON: never ``NaN``/``Infinity`` (not JSON; clients' parsers reject them).

    The sampler already reports finite log-probs; should a non-finite float still get here, it is
    written as ``null`` rather than breaking the body or a stream mid-way.
    """
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def sse(value: Any) -> str:
    """One server-sent event carrying ``value`` as JSON."""
    return f"data: {dumps(value)}\n\n"


def generation_failed(outputs: Sequence[RequestOutput]) -> ApiError | None:
    """The 500 to answer when a whole response's generation ended in error."""
    last = outputs[-1]
    return ApiError(500, last.error or "generation failed") if last.finish_reason == "error" else None
