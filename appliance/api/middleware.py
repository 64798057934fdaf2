"""The outer ASGI layer: request id, bearer auth, request counting, last-resort 500.

Pure ASGI rather than Starlette's BaseHTTPMiddleware, which buffers and interferes
with streamed responses and client-disconnect signals.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.api.anthropic.responses import error_body as anthropic_error_body
from appliance.api.errors import ApiError, internal_error
from appliance.api.metrics import Metrics

log = logging.getLogger("appliance.api")

# Routes reachable without the API key: liveness probes must work unauthenticated.
PUBLIC_PATHS = frozenset({"/health"})
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestContext:
    """Tags every request with an id (the client's `x-request-id` if sane) and counts it."""

    def __init__(self, app: ASGIApp, metrics: Metrics, api_key: str | None = None):
        self.app = app
        self.metrics = metrics
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _CLIENT_ID.match(incoming) else f"req_{secrets.token_hex(8)}"
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_tagged(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                self._count(scope, message["status"])
            await send(message)

        if self.api_key and scope["path"] not in PUBLIC_PATHS and not self._authorized(scope):
            err = ApiError(
                401,
                "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await _send_error(send_tagged, err, anthropic=_is_anthropic(scope))
            return
        try:
            await self.app(scope, receive, send_tagged)
        except Exception:
            log.exception("request %s %s %s: unhandled error", request_id, scope.get("method"), scope["path"])
            if not started:
                await _send_error(send_tagged, internal_error(request_id), anthropic=_is_anthropic(scope))

    def _authorized(self, scope: Scope) -> bool:
        assert self.api_key is not None
        given = ""
        auth = _header(scope, b"authorization")
        if auth and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        else:
            given = _header(scope, b"x-api-key") or ""
        return hmac.compare_digest(given.encode(), self.api_key.encode())

    def _count(self, scope: Scope, status: int) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        self.metrics.requests.labels(path, str(status)).inc()


def _is_anthropic(scope: Scope) -> bool:
    """Anthropic-dialect routes answer errors in Anthropic's shape, even from here."""
    return str(scope.get("path", "")).startswith("/v1/messages")


async def _send_error(send: Send, err: ApiError, *, anthropic: bool = False) -> None:
    body = json.dumps(anthropic_error_body(err) if anthropic else err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
