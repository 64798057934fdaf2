"""What the fake cloud providers share: a loopback server, a request log, injected failures.

The fakes stand in for cloud providers (OpenAI, Anthropic), which cannot be reached
from here. They are real HTTP servers on 127.0.0.1 (uvicorn in a thread), so what
our clients send and receive crosses a real socket: headers, SSE framing, dropped
connections. Tests script the answers (`Reply`) and the misbehaviour (`fail_next`,
`drop_next`, latency) and then read `requests` to see what arrived, or that nothing did.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from live_server import running_server


@dataclass
class Reply:
    """What the fake model answers: text, optional reasoning, and tool calls (name, arguments)."""

    text: str = "Hello from the fake provider."
    reasoning: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    finish: str | None = None  # None: the natural one (stop, or tool calls)
    cached_tokens: int = 0  # prompt tokens reported as read from the provider's cache (OpenAI)


ReplyFn = Callable[[dict[str, Any]], Reply]


@dataclass
class Recorded:
    """One request as it arrived: path, headers (lowercased names), JSON body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class _Failure:
    status: int
    message: str
    headers: dict[str, str]


def words(text: str) -> list[str]:
    return [w + " " for w in text.split(" ")[:-1]] + [text.split(" ")[-1]] if text else []


def pieces(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class FakeProvider:
    """Base of the fakes; subclasses add the dialect's routes in `_routes(app)`."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: list[str] | None = None,
        reply: Reply | ReplyFn | None = None,
        ttft_s: float = 0.0,
        token_s: float = 0.0,
        n_ctx: int | None = None,
    ):
        self.api_key = api_key
        self.models = models  # None: any model name is accepted
        self.reply = reply or Reply()
        self.ttft_s = ttft_s
        self.token_s = token_s
        self.n_ctx = n_ctx
        self.requests: list[Recorded] = []
        self.stream_outcomes: list[str] = []  # per streamed answer: "finished", or "cut" (client left, drop)
        self._failures: list[_Failure] = []
        self._drops: list[int] = []
        self._lock = threading.Lock()
        self._stack = ExitStack()
        self.base_url = ""
        self.app = FastAPI()
        self._routes(self.app)

    # -- test controls ----------------------------------------------------------------
    def fail_next(self, n: int, status: int, *, retry_after: float | None = None, message: str = "") -> None:
        """The next `n` requests get HTTP `status` (with Retry-After when given)."""
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        failure = _Failure(status, message or f"injected failure {status}", headers)
        with self._lock:
            self._failures += [failure] * n

    def drop_next(self, n: int, *, after_chunks: int) -> None:
        """The next `n` streamed answers lose their connection after `after_chunks` content chunks."""
        with self._lock:
            self._drops += [after_chunks] * n

    def reply_for(self, body: dict[str, Any]) -> Reply:
        return self.reply(body) if callable(self.reply) else self.reply

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> FakeProvider:
        live = self._stack.enter_context(running_server(self.app, log_level="error"))
        self.base_url = live.base_url
        return self

    def stop(self) -> None:
        self._stack.close()

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- for subclasses ---------------------------------------------------------------
    def _routes(self, app: FastAPI) -> None:
        raise NotImplementedError

    def _record(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(Recorded(path, {k.lower(): v for k, v in headers.items()}, body))

    def _take_failure(self) -> _Failure | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _take_drop(self) -> int | None:
        with self._lock:
            return self._drops.pop(0) if self._drops else None

    def _error(
        self, status: int, message: str, headers: dict[str, str] | None = None, code: str | None = None
    ) -> JSONResponse:
        raise NotImplementedError

    def _failure_response(self) -> JSONResponse | None:
        failure = self._take_failure()
        if failure is None:
            return None
        return self._error(failure.status, failure.message, failure.headers)

    async def _watched(self, stream: AsyncIterator[str]) -> AsyncIterator[str]:
        """Pass `stream` through, noting whether it ran to its end or was cut off."""
        finished = False
        try:
            async for chunk in stream:
                yield chunk
            finished = True
        finally:
            with self._lock:
                self.stream_outcomes.append("finished" if finished else "cut")

    async def _pace(self, i: int) -> None:
        """Latency: `ttft_s` before the first chunk, `token_s` before each later one."""
        delay = self.ttft_s if i == 0 else self.token_s
        if delay:
            await asyncio.sleep(delay)


class DropConnection(Exception):
    """Raised inside a streaming body: uvicorn then cuts the connection mid-response."""
