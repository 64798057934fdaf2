"""`VllmRuntime`: the Runtime protocol over a supervised vLLM child.

Requests are forwarded by `OpenAICompatUpstream` (the one OpenAI client we have; a vLLM child
is just an upstream on loopback), so routing, errors, metrics and audit in the API are the
same as for our llama.cpp engine. What this layer adds is the child's lifecycle: while vLLM
is down or restarting a new request gets a 503 with Retry-After at once, and a stream cut by
the child's death ends with a clean error event instead of a hang or a short answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import suppress

from runtimes.base import (
    ChatRequest,
    CompletionRequest,
    Event,
    Overloaded,
    Runtime,
    RuntimeError_,
    RuntimeStats,
    UpstreamError,
)
from runtimes.upstream.http import Timeouts
from runtimes.upstream.lean_transport import LeanTransport
from runtimes.upstream.openai_compat import OpenAICompatUpstream
from runtimes.vllm.supervisor import State, Supervisor

# A local child's silence is bounded by the supervisor's hang detection, not by a read
# timeout: a 7k-token agent prompt may take minutes to prefill on a CPU.
CHILD_TIMEOUTS = Timeouts(connect=5.0, read=900.0, write=60.0, pool=30.0)


class EngineUnavailable(Overloaded):
    """vLLM is starting, restarting, or gave up: retry later (503 with Retry-After).

    An Overloaded, so the API sends Retry-After and a router may send the request elsewhere.
    """

    status = 503
    code = "engine_unavailable"
    type = "server_error"


class VllmRuntime(Runtime):
    """A vLLM child serving `id` (the catalog name it was started with --served-model-name)."""

    def __init__(
        self,
        id: str,
        n_ctx: int,
        supervisor: Supervisor,
        *,
        slots: int = 0,
        upstream: Callable[[str, str, int], OpenAICompatUpstream] | None = None,
    ):
        self.id = id
        self.n_ctx = n_ctx
        self.slots = slots
        self.supervisor = supervisor
        self._make_upstream = upstream or self._default_upstream
        self._upstream: OpenAICompatUpstream | None = None
        self._upstream_gen = 0
        self._retired: list[OpenAICompatUpstream] = []

    def _default_upstream(self, base_url: str, model: str, n_ctx: int) -> OpenAICompatUpstream:
        # The lean transport: the child is on loopback (never proxied), and httpx's default
        # transport costs ~1.5 ms of CPU per request (BENCHMARKS.md, cloud proxy overhead).
        return OpenAICompatUpstream(
            base_url,
            model,
            provider="vllm",
            n_ctx=n_ctx,
            timeouts=CHILD_TIMEOUTS,
            vendor_params=True,
            transport=LeanTransport(),
        )

    # -- Runtime ------------------------------------------------------------------------
    def chat(self, req: ChatRequest) -> AsyncIterator[Event]:
        return self._forward(lambda up: up.chat(req))

    def complete(self, req: CompletionRequest) -> AsyncIterator[Event]:
        return self._forward(lambda up: up.complete(req))

    def stats(self) -> RuntimeStats:
        up = self._upstream
        busy = up.stats().slots_busy if up is not None else 0
        ready = self.supervisor.state == State.READY
        return RuntimeStats(slots_total=self.slots, slots_busy=busy, queue_depth=0, loaded=ready)

    async def close(self) -> None:
        for up in [*self._retired, *([self._upstream] if self._upstream else [])]:
            await up.close()
        self._retired, self._upstream = [], None
        await asyncio.to_thread(self.supervisor.stop)

    # -- forwarding ---------------------------------------------------------------------
    def _current(self) -> tuple[OpenAICompatUpstream, int]:
        """The upstream for the running child; a restarted child listens on a new port."""
        sup = self.supervisor
        if sup.state != State.READY:
            raise self._unavailable()
        gen = sup.generation
        if self._upstream is None or self._upstream_gen != gen:
            if self._upstream is not None:
                self._retired.append(self._upstream)  # closed at close(); streams may still use it
            self._upstream = self._make_upstream(sup.base_url, self.id, self.n_ctx)
            self._upstream_gen = gen
        return self._upstream, gen

    async def _forward(
        self, call: Callable[[OpenAICompatUpstream], AsyncIterator[Event]]
    ) -> AsyncIterator[Event]:
        upstream, gen = self._current()
        events = call(upstream)
        try:
            async for ev in events:
                yield ev
        except UpstreamError as exc:
            # The child died under this request (its socket closed): say so, the supervisor restarts it.
            dropped = exc.upstream_status is None
            if not self.supervisor.child_alive(gen) or (dropped and await self._died(gen)):
                raise self._unavailable("the vLLM engine stopped during this request") from None
            raise
        finally:
            with suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]

    async def _died(self, gen: int, grace_s: float = 1.0) -> bool:
        """A dropped connection may come a moment before the exit is visible: look again briefly."""
        deadline = asyncio.get_running_loop().time() + grace_s
        while asyncio.get_running_loop().time() < deadline:
            if not self.supervisor.child_alive(gen):
                return True
            await asyncio.sleep(0.05)
        return False

    def _unavailable(self, what: str | None = None) -> RuntimeError_:
        sup = self.supervisor
        state = {
            State.STARTING: "vLLM is still starting",
            State.RESTARTING: f"vLLM is restarting (attempt {sup.restarts})",
            State.FAILED: "vLLM failed repeatedly and was not restarted (see the appliance's vLLM log)",
            State.STOPPED: "vLLM is stopped",
            State.READY: "vLLM is restarting",
        }[sup.state]
        message = f"{what}; {state}" if what else state
        return EngineUnavailable(sup.retry_after_s(), message + "; retry shortly.")
