"""What every upstream client shares: timeouts, the key, SSE framing, and error mapping.

An upstream is a server we forward to (a cloud provider, a vLLM child on loopback).
Its failures must reach our API as our own error classes, so the API answers with
the right status and the cloud pool knows what is worth retrying; and its key must
never leave this process in a message, a log line or a repr.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from runtimes.base import (
    ContextLengthExceeded,
    Event,
    InvalidRequest,
    Overloaded,
    Runtime,
    RuntimeError_,
    RuntimeStats,
    UpstreamError,
)

# Statuses worth trying again (after a pause, or at another provider). 529: Anthropic's "overloaded".
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
_CONTEXT_HINT = re.compile(
    r"context.{0,20}(length|window)|maximum context|too many tokens|prompt is too long", re.I
)
_KEYLIKE = re.compile(r"\b(sk|key|token)[-_][A-Za-z0-9_\-*]{6,}", re.I)
_MAX_MESSAGE = 400  # characters of an upstream's error message passed on


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `read` is the longest silence allowed between two chunks of a stream, so a
    stalled upstream becomes an error instead of a hang."""

    connect: float = 5.0
    read: float = 120.0
    write: float = 30.0
    pool: float = 10.0

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


def as_secret(key: SecretStr | str | None) -> SecretStr | None:
    if key is None or isinstance(key, SecretStr):
        return key
    return SecretStr(key)


def redact(text: str, key: SecretStr | None) -> str:
    """`text` without the key, without anything shaped like a key, and not too long."""
    if key is not None and key.get_secret_value():
        text = text.replace(key.get_secret_value(), "[redacted]")
    text = _KEYLIKE.sub("[redacted]", text)
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


def is_loopback(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def new_client(
    base_url: str, timeouts: Timeouts, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    """A pooled client. Proxy variables are ignored for loopback peers, so a vLLM child on
    127.0.0.1 is never sent through a corporate proxy."""
    return httpx.AsyncClient(
        timeout=timeouts.httpx(),
        transport=transport,
        trust_env=not is_loopback(base_url),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
    )


def retry_after_s(headers: httpx.Headers, default: float = 1.0) -> float:
    """Seconds from `retry-after-ms`, `retry-after` (seconds or an HTTP date), else `default`."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else default


def upstream_message(body: bytes) -> str:
    """The human message inside an OpenAI- or Anthropic-shaped error body, else the raw text."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return data["message"]
    return json.dumps(data)[:_MAX_MESSAGE]


def error_for_status(
    status: int, body: bytes, headers: httpx.Headers, *, provider: str, key: SecretStr | None, n_ctx: int = 0
) -> RuntimeError_:
    """Our error for an upstream's HTTP error answer."""
    msg = redact(upstream_message(body), key)
    if status in (400, 413, 422):
        if _CONTEXT_HINT.search(msg):
            return ContextLengthExceeded(0, n_ctx, f"{provider}: the prompt does not fit the model: {msg}")
        return InvalidRequest(f"{provider} rejected the request: {msg}")
    if status == 429:
        return Overloaded(retry_after_s(headers), f"{provider} is rate limiting (HTTP 429): {msg}")
    if status in (401, 403):
        return UpstreamError(
            f"{provider} refused the credentials (HTTP {status}); check its API key variable.",
            upstream_status=status,
            retryable=False,
        )
    retryable = status in RETRYABLE_STATUS or status >= 500
    return UpstreamError(
        f"{provider} answered HTTP {status}: {msg}", upstream_status=status, retryable=retryable
    )


def error_for_transport(exc: httpx.TransportError, *, provider: str, key: SecretStr | None) -> UpstreamError:
    """Our error for a connection that failed, stalled or dropped."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        what = "could not be reached"
    elif isinstance(exc, httpx.TimeoutException):
        what = "went silent past the read timeout"
    else:
        what = "dropped the connection"
    detail = redact(str(exc), key) or type(exc).__name__
    return UpstreamError(f"{provider} {what} ({detail})", upstream_status=None, retryable=True)


async def open_stream(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    provider: str,
    key: SecretStr | None,
    n_ctx: int = 0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.Response:
    """POST and return the streaming response once its status is 2xx; otherwise raise ours.

    With `transport` (the one the client was built with), the request goes to it directly:
    `client.send` adds auth flows, redirects and cookies, which an API stream never uses,
    for about 0.2 ms of CPU before the first token. The caller must `aclose()` the response.
    """
    request = client.build_request("POST", url, json=body, headers=headers)
    try:
        if transport is not None:
            response = await transport.handle_async_request(request)
        else:
            response = await client.send(request, stream=True)
    except httpx.TransportError as exc:
        raise error_for_transport(exc, provider=provider, key=key) from None
    if response.status_code >= 300:
        try:
            raw = await response.aread()
        except httpx.TransportError:
            raw = b""
        finally:
            await response.aclose()
        raise error_for_status(
            response.status_code, raw, response.headers, provider=provider, key=key, n_ctx=n_ctx
        )
    return response


async def _lines(response: httpx.Response) -> AsyncIterator[str]:
    """The body's lines, split on LF or CRLF and decoded as UTF-8 (what SSE is). Cheaper than
    httpx's `aiter_lines`, whose text and line decoders cost about 20 us per streamed token;
    a server ending lines with a lone CR (none we talk to does) yields one line, then a
    `final()` error, never events made up from a mis-split."""
    buf = b""
    async for piece in response.aiter_bytes():
        buf += piece
        if b"\n" not in piece:
            continue
        *complete, buf = buf.split(b"\n")
        for raw in complete:
            yield raw.removesuffix(b"\r").decode("utf-8", "replace")
    if buf:
        yield buf.removesuffix(b"\r").decode("utf-8", "replace")


async def sse_data(response: httpx.Response, *, provider: str, key: SecretStr | None) -> AsyncIterator[str]:
    """The `data:` payloads of an SSE body (multi-line data joined); transport failures become ours."""
    lines: list[str] = []
    try:
        async for line in _lines(response):
            if line.startswith("data:"):
                lines.append(line[5:].removeprefix(" "))
            elif not line and lines:
                yield "\n".join(lines)
                lines = []
    except httpx.TransportError as exc:
        raise error_for_transport(exc, provider=provider, key=key) from None
    if lines:
        yield "\n".join(lines)


def parse_json(data: str, *, provider: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except ValueError:
        raise UpstreamError(f"{provider} sent a stream event that is not JSON", retryable=True) from None
    if not isinstance(obj, dict):
        raise UpstreamError(f"{provider} sent a stream event that is not an object", retryable=True)
    return obj


class StreamReader(Protocol):
    """Turns one dialect's stream events into our Events."""

    done: bool  # the upstream said the answer is complete; the rest of the body is only drained

    def feed(self, event: dict[str, Any]) -> Event | None: ...

    def final(self) -> Event:
        """The closing event; raises when the stream was cut before its end."""
        ...


class SseUpstream(Runtime):
    """What the OpenAI-compatible and Anthropic runtimes share: the pooled client, the key,
    the in-flight count, and one streaming loop; a subclass supplies bodies, headers and a
    `StreamReader` for its dialect."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        id: str | None,
        api_key: SecretStr | str | None,
        provider: str,
        n_ctx: int,
        timeouts: Timeouts | None,
        headers: Mapping[str, str] | None,
        transport: httpx.AsyncBaseTransport | None,
    ):
        self.base_url = base_url
        self.model = model
        self.id = id or model
        self.provider = provider
        self.n_ctx = n_ctx
        self.timeouts = timeouts or Timeouts()
        self._key = as_secret(api_key)
        self._extra_headers = dict(headers or {})
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._active = 0

    def __repr__(self) -> str:
        where = f"provider={self.provider!r}, base_url={self.base_url!r}, model={self.model!r}"
        return f"{type(self).__name__}({where})"

    def stats(self) -> RuntimeStats:
        return RuntimeStats(slots_total=0, slots_busy=self._active, queue_depth=0, loaded=True)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_client(self.base_url, self.timeouts, self._transport)
        return self._client

    async def _stream(
        self, url: str, body: dict[str, Any], headers: dict[str, str], reader: StreamReader
    ) -> AsyncIterator[Event]:
        """POST `body` and yield the reader's Events. Nothing is yielded before the upstream
        produced output, so an error raised before the first Event left the client untouched."""
        self._active += 1
        try:
            ours = {"provider": self.provider, "key": self._key}
            response = await open_stream(
                self._http(), url, body, headers, n_ctx=self.n_ctx, transport=self._transport, **ours
            )
            try:
                async for data in sse_data(response, **ours):
                    # After the end, read on to the end of the body: a response closed early
                    # takes its connection with it instead of returning it to the pool.
                    if reader.done:
                        continue
                    if data.strip() == "[DONE]":  # OpenAI's end marker; Anthropic has none
                        reader.done = True
                        continue
                    event = reader.feed(parse_json(data, provider=self.provider))
                    if event is not None:
                        yield event
                yield reader.final()
            finally:
                await response.aclose()
        finally:
            self._active -= 1
