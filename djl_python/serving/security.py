"""Access control for ``djl-serve``: an API key (``--api-key``) and CORS (``--allowed-origins``).

``install_security(app, config)`` adds both middlewares to an app that has not
started yet. CORS is the outer one, so a browser's preflight (``OPTIONS``) is
answered without a key, and a 401 still carries the CORS headers a browser
needs to show it.

The key check follows vLLM's ``--api-key`` (``Authorization: Bearer <key>``,
401 otherwise) with RFC 6750's ``WWW-Authenticate: Bearer`` header; health
checks (``/ping``, ``/health``) and ``/version`` stay open so load balancers and SageMaker need
no secret. The comparison takes constant time.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Awaitable, Callable

from starlette.middleware.cors import CORSMiddleware

from djl_python.config import HandlerConfig

OPEN_PATHS = frozenset({"/ping", "/health", "/version"})
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class ApiKeyMiddleware:
    """Refuse HTTP requests without ``Authorization: Bearer <api_key>`` (except ``OPEN_PATHS``)."""

    def __init__(self, app: Any, api_key: str) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.app = app
        self._expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS or self._authorised(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": {"message": "missing or wrong API key: send Authorization: Bearer <key>",
                                     "type": "authentication_error", "param": None, "code": 401}}).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})

    def _authorised(self, scope: dict) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                return secrets.compare_digest(value, self._expected)
        return False


def install_security(app: Any, config: HandlerConfig) -> None:
    """Add the API-key and CORS middlewares that ``config`` asks for (none when unset)."""
    if config.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=config.api_key.get_secret_value())
    if config.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.allowed_origins), allow_methods=["*"],
                           allow_headers=["*"], allow_credentials="*" not in config.allowed_origins)
