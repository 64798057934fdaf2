"""The outer ASGI layer: request id, Host/Origin/key checks (guard.py), the body-size
limit while the body streams in (limits.py), request counting, last-resort 500.

Pure ASGI rather than Starlette's BaseHTTPMiddleware, which buffers and interferes
with streamed responses and client-disconnect signals.
"""

from __future__ import annotations

import json
import logging
import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.api.anthropic.responses import error_body as anthropic_error_body
from appliance.api.console.page import PAGE_PATHS
from appliance.api.errors import ApiError, internal_error
from appliance.api.guard import AccessPolicy, cors_headers, preflight_headers
from appliance.api.limits import DEFAULT_LIMITS, body_too_large
from appliance.api.metrics import Metrics

log = logging.getLogger("appliance.api")

# Routes reachable without the API key: liveness probes must work unauthenticated, and the
# console's page must load to ask for a key (its data endpoints still need one).
PUBLIC_PATHS = frozenset({"/health", *PAGE_PATHS})
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestContext:
    """Tags every request with an id (the client's `x-request-id` if sane), checks who sends
    it and how big it is, and counts it."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        api_key: str | None = None,
        access: AccessPolicy | None = None,
        max_body_bytes: int = DEFAULT_LIMITS.max_body_bytes,
    ):
        self.app = app
        self.metrics = metrics
        self.access = access or AccessPolicy(api_key=api_key)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _CLIENT_ID.match(incoming) else f"req_{secrets.token_hex(8)}"
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        origin = _header(scope, b"origin")
        extra = cors_headers(origin) if origin and self.access.cors_configured(origin) else []
        started = False

        async def send_tagged(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [*message.get("headers", []), *extra, (b"x-request-id", request_id.encode())]
                message["headers"] = headers
                self._count(scope, message["status"])
            await send(message)

        anthropic = _is_anthropic(scope)
        refusal = self._refusal(scope, origin)
        if refusal is not None:
            if refusal.status == 204:  # an allowed origin's preflight: answered here, no route has OPTIONS
                extra = []
                headers = preflight_headers(origin or "", _header(scope, b"access-control-request-headers"))
                await send_tagged({"type": "http.response.start", "status": 204, "headers": headers})
                await send_tagged({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await _send_error(send_tagged, refusal, anthropic=anthropic)
            return
        length = _header(scope, b"content-length")
        if length and length.isdigit() and int(length) > self.max_body_bytes:
            await _send_error(send_tagged, body_too_large(self.max_body_bytes), anthropic=anthropic)
            return
        try:
            await self.app(scope, _bounded(receive, self.max_body_bytes), send_tagged)
        except ApiError as err:  # the body limit, hit outside a route's own error handling
            if not started:
                await _send_error(send_tagged, err, anthropic=anthropic)
        except Exception:
            log.exception("request %s %s %s: unhandled error", request_id, scope.get("method"), scope["path"])
            if not started:
                await _send_error(send_tagged, internal_error(request_id), anthropic=anthropic)

    def _refusal(self, scope: Scope, origin: str | None) -> ApiError | None:
        """Why this request is refused before any route (403 Host/Origin, 401 key), or a 204
        marker for a preflight to answer; None: go on. Records the key's name on the scope."""
        host = _header(scope, b"host")
        if not self.access.host_allowed(host):
            return ApiError(
                403,
                "The Host header names a host this server does not answer for (DNS rebinding "
                "protection); use 127.0.0.1 or localhost, or start it with --allowed-host.",
                code="host_not_allowed",
            )
        if origin is not None:
            preflight = scope.get("method") == "OPTIONS" and _header(scope, b"access-control-request-method")
            if not self.access.origin_allowed(origin, host):
                return ApiError(
                    403,
                    "Requests from web pages of this origin are not allowed; start the server with "
                    "--allow-origin ORIGIN (or APPLIANCE_ORIGINS) to allow one.",
                    code="origin_not_allowed",
                )
            if preflight:
                return ApiError(204, "")
        if scope["path"] in PUBLIC_PATHS or not self.access.keys_required():
            return None
        name = self.access.identify(_given_key(scope))
        if name is None:
            return ApiError(
                401,
                "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        scope["state"]["key_name"] = name
        return None

    def _count(self, scope: Scope, status: int) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        self.metrics.requests.labels(path, str(status)).inc()


def _given_key(scope: Scope) -> str:
    """The key a client sent: `Authorization: Bearer` (OpenAI) or `x-api-key` (Anthropic)."""
    auth = _header(scope, b"authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return _header(scope, b"x-api-key") or ""


def _bounded(receive: Receive, limit: int) -> Receive:
    """`receive` that raises a 413 as soon as the body read so far passes `limit` (a chunked
    body, or one longer than it said): the excess is never kept."""
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise body_too_large(limit)
        return message

    return bounded


def _is_anthropic(scope: Scope) -> bool:
    """Anthropic-dialect routes answer errors in Anthropic's shape, even from here."""
    return str(scope.get("path", "")).startswith("/v1/messages")


async def _send_error(send: Send, err: ApiError, *, anthropic: bool = False) -> None:
    body = json.dumps(anthropic_error_body(err) if anthropic else err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
