"""The one error type of the API layer, and the conditions every transport reports.

Every failure before or during a request becomes an ``ApiError(status,
message, param)``; each transport renders it in its own shape (LMI's
``{"code", "type", "message"}``, OpenAI's ``{"error": {...}}``, TGI's
``{"error", "error_type"}``, a DJL per-request record with ``code``).

=====================  ======  ===========================================
exception              status  meaning
=====================  ======  ===========================================
InvalidRequest         400     bad field (``param`` names it)
(transport)            413     body over ``max_request_bytes``
ServerOverloaded       503     waiting queue full (``Retry-After``)
ServerUnavailable      503     loading or shutting down (``Retry-After``);
                               failed to load (``permanent``: no
                               ``Retry-After``, type ``unavailable``)
RequestTimeout         504     not finished within ``predict_timeout``
ClientTooSlow          408     output left unread past ``max_unsent_tokens``
anything else          500     a bug; logged with its traceback
=====================  ======  ===========================================
"""

from __future__ import annotations

import logging
from typing import Optional

from djl_python.engine.request import InvalidRequest

logger = logging.getLogger(__name__)


class ServerOverloaded(RuntimeError):
    """The waiting queue is full; HTTP answers 503 with ``Retry-After``."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerUnavailable(RuntimeError):
    """No engine accepts requests (loading, failed to load, draining, stopped): 503.

    ``permanent`` (the model failed to load): retrying cannot help, so the answer has no
    ``Retry-After`` and its type is ``unavailable``, never ``overloaded``.
    """

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class ClientTooSlow(RuntimeError):
    """A streaming client stopped reading and its unsent output passed ``max_unsent_tokens``;
    the request was aborted. Reported in-band (the response had started): 408."""


class RequestTimeout(TimeoutError):
    """The request did not finish within ``predict_timeout`` and was aborted: 504."""


_KINDS = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error",
          415: "invalid_request_error", 503: "overloaded", 504: "timeout"}


class ApiError(Exception):
    """A request failed with ``status``; ``param`` names the offending field, if any."""

    def __init__(self, status: int, message: str, param: Optional[str] = None,
                 headers: Optional[dict[str, str]] = None, kind: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers or {}
        self._kind = kind

    @property
    def kind(self) -> str:
        """A short error type, as OpenAI's ``type``."""
        return self._kind or _KINDS.get(self.status, "server_error")

    @property
    def text(self) -> str:
        """``param: message``, for shapes with a single message string (LMI, TGI, DJL)."""
        return self.message if self.param is None else f"{self.param}: {self.message}"


def to_api_error(err: BaseException, prompt_field: str = "inputs") -> ApiError:
    """Map an exception raised while validating or generating onto an ``ApiError``.

    The engine names the prompt ``prompt``; ``prompt_field`` is what the API
    calls it (``inputs`` for LMI and TGI, ``prompt`` / ``messages`` for OpenAI).
    """
    if isinstance(err, ApiError):
        return err
    if isinstance(err, InvalidRequest):
        return ApiError(400, err.message, prompt_field if err.field == "prompt" else err.field)
    if isinstance(err, ServerOverloaded):
        return ApiError(503, str(err), headers={"Retry-After": str(err.retry_after)})
    if isinstance(err, ServerUnavailable):
        if err.permanent:
            return ApiError(503, str(err), kind="unavailable")
        return ApiError(503, str(err), headers={"Retry-After": "5"})
    if isinstance(err, RequestTimeout):
        return ApiError(504, str(err))
    if isinstance(err, ClientTooSlow):
        return ApiError(408, str(err), kind="timeout")
    logger.error("unexpected error", exc_info=err)
    return ApiError(500, f"internal error: {type(err).__name__}: {err}")
