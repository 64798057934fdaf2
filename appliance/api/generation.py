"""One runtime answer being served: timing, usage, logging, and a guaranteed close.

Closing the runtime's iterator is how a runtime learns its client is gone and frees
the slot, so every path (finished, error, disconnect before or during the stream)
goes through `Generation.aclose()`, shielded from the cancellation that caused it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from starlette.requests import Request

from appliance.api.draining import DRAINING, ServerStopping
from appliance.api.metrics import Metrics
from runtimes.base import Event, Usage

log = logging.getLogger("appliance.api")
T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


class Generation:
    """Wraps a runtime's event iterator; records TTFT, inter-token gaps and usage."""

    def __init__(
        self,
        events: AsyncIterator[Event],
        *,
        model: str,
        request_id: str,
        route: str,
        metrics: Metrics,
        started: float,
    ):
        self._it = events
        self._first: Event | None = None
        self._closed = False
        self.model = model
        self.request_id = request_id
        self.route = route
        self.metrics = metrics
        self.started = started
        self.ttft: float | None = None
        self._last_token: float | None = None
        self.usage: Usage | None = None
        # The prompt's counts from the first event, where the runtime knows them up front.
        self.prompt_usage: Usage | None = None
        self.finish: str | None = None
        self.outcome = "incomplete"
        # Called once after close, for the usage log (set by appliance.api.routing).
        self.on_close: Callable[[Generation], None] | None = None
        metrics.in_flight.labels(model).inc()

    async def prefetch(self) -> Event | None:
        """Wait for the first event, so errors before any output get a real HTTP status."""
        try:
            self._first = await self._next()
        except StopAsyncIteration:
            self._first = None
        if self._first is not None:
            self.prompt_usage = self._first.prompt_usage
        return self._first

    async def events(self) -> AsyncIterator[Event]:
        """The prefetched event, then the rest, until the runtime finishes."""
        if self._first is not None:
            ev, self._first = self._first, None
            self._observe(ev)
            yield ev
            if self._done(ev):
                return
        while True:
            try:
                ev = await self._next()
            except StopAsyncIteration:
                return
            self._observe(ev)
            yield ev
            if self._done(ev):
                return

    async def _next(self) -> Event:
        """The runtime's next event, or `ServerStopping` once a shutdown's grace is over (the
        wait is cancelled as a hang-up would cancel it, so the runtime frees the slot)."""
        with DRAINING.wait_scope():
            return await self._it.__anext__()
        raise ServerStopping()  # reached only when the drain cancelled the wait

    def _done(self, ev: Event) -> bool:
        return ev.finish_reason is not None and ev.usage is not None

    def _observe(self, ev: Event) -> None:
        if ev.content or ev.reasoning or ev.tool_calls:
            now = time.perf_counter()
            if self.ttft is None:
                self.ttft = now - self.started
                self.metrics.ttft.labels(self.model).observe(self.ttft)
            elif self._last_token is not None:
                self.metrics.itl.labels(self.model).observe(now - self._last_token)
            self._last_token = now
        if ev.finish_reason is not None:
            self.finish = ev.finish_reason
        if ev.usage is not None:
            self.usage = ev.usage

    async def aclose(self, outcome: str | None = None) -> None:
        """Close the runtime's iterator (idempotent, shielded), then record and log once."""
        if self._closed:
            return
        self._closed = True
        if outcome:
            self.outcome = outcome
        with anyio.CancelScope(shield=True):
            closer = getattr(self._it, "aclose", None)
            if closer is not None:
                try:
                    await closer()
                except Exception:
                    log.exception("request %s: closing the runtime stream failed", self.request_id)
        self.metrics.in_flight.labels(self.model).dec()
        if self.usage is not None:
            self.metrics.record_usage(self.model, self.usage)
        self.metrics.live.record(self.route, self.usage, time.perf_counter() - self.started, self.ttft)
        u = self.usage or Usage()
        ttft = f"{self.ttft * 1000:.0f}ms" if self.ttft is not None else "-"
        log.info(
            "request %s %s model=%s outcome=%s finish=%s prompt=%d cached=%d completion=%d "
            "ttft=%s total=%.0fms",
            self.request_id,
            self.route,
            self.model,
            self.outcome,
            self.finish,
            u.prompt_tokens,
            u.cached_tokens,
            u.completion_tokens,
            ttft,
            (time.perf_counter() - self.started) * 1000,
        )
        if self.on_close is not None:
            try:
                self.on_close(self)
            except Exception:
                log.exception("request %s: recording usage failed", self.request_id)


async def unless_disconnected(request: Request, work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` but cancel it if the client hangs up first (then raise ClientGone).

    Only for times when nothing else reads the request's receive channel: after the
    body was read and before a streaming response starts listening for itself.
    """
    result: list[Any] = []
    failure: list[BaseException] = []

    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    tg.cancel_scope.cancel()
                    return

        async def run() -> None:
            try:
                result.append(await work())
            except Exception as exc:  # re-raised below, outside the task group
                failure.append(exc)
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        tg.start_soon(run)
    if failure:
        raise failure[0]
    if not result:
        raise ClientGone()
    return result[0]


async def start(request: Request, gen: Generation) -> Event | None:
    """Prefetch the first event, closing the generation if that fails or the client leaves."""
    try:
        return await unless_disconnected(request, gen.prefetch)
    except ClientGone:
        await gen.aclose("client_gone")
        raise
    except BaseException:
        await gen.aclose("error")
        raise
