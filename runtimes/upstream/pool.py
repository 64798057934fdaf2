"""`CloudPool`: one chat call for a cloud model, over several providers in fallback order.

Failures are only hidden from the client while nothing has been sent to it: before a
provider's first event, a 429, 5xx or a broken connection is retried at the same
provider (exponential backoff with jitter) and then at the next one. After the first
event the stream belongs to that provider and an error reaches the client as one.
A provider that keeps failing is benched for a while (cooldown) so requests stop
paying its timeouts. When every provider failed, `CloudUnavailable` lets the router
serve the request locally instead.

A provider that accepts the connection and never answers would otherwise hold the client
for its read timeout (a long one, as it also bounds the silence inside a stream) times its
retries; `first_byte_timeout_s` bounds the wait for its first event instead, and such a
provider is not retried (it would most likely stay silent again).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from pydantic import SecretStr

from runtimes.base import (
    ChatRequest,
    CloudUnavailable,
    CompletionRequest,
    Event,
    InvalidRequest,
    Overloaded,
    Runtime,
    RuntimeError_,
    RuntimeStats,
    UpstreamError,
    Usage,
)
from runtimes.upstream.config import CloudConfig, CloudModel, Price, ProviderConfig, load_keys
from runtimes.upstream.http import Timeouts

log = logging.getLogger("appliance.cloud")

Sleep = Callable[[float], Awaitable[None]]
TransportFor = Callable[[ProviderConfig], httpx.AsyncBaseTransport | None]


@dataclass(frozen=True)
class Served:
    """Which provider answered, as which upstream model, at what price."""

    provider: str
    model: str  # our cloud model name
    upstream_model: str
    price: Price | None
    attempts: int  # requests sent before this one succeeded, plus one

    def cost(self, usage: Usage) -> float | None:
        return self.price.cost(usage) if self.price is not None else None


@dataclass
class ProviderHealth:
    consecutive_failures: int = 0
    cooldown_until: float = 0.0


@dataclass
class _Route:
    provider: ProviderConfig
    model: CloudModel
    runtime: Runtime


class CloudPool:
    """Chat for the configured cloud models; see the module docstring for the failure policy.

    environ: where keys are read (default os.environ), once, here.
    transport_for / clock / sleep / rng: seams for tests (all default to the real thing).
    """

    def __init__(
        self,
        config: CloudConfig,
        *,
        environ: dict[str, str] | None = None,
        transport_for: TransportFor | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ):
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self._rng = random.Random(config.seed)
        keys = load_keys(config, environ)
        self.health = {p.name: ProviderHealth() for p in config.providers}
        self.skipped = {
            p.name: f"variable {p.api_key_env} is not set"
            for p in config.providers
            if p.api_key_env and keys[p.name] is None
        }
        self._routes: dict[tuple[str, str], _Route] = {}
        for p in config.providers:
            if p.name in self.skipped:
                continue
            transport = transport_for(p) if transport_for else None
            for name, model in p.models.items():
                runtime = build_upstream(p, name, model, keys[p.name], transport)
                self._routes[(p.name, name.lower())] = _Route(p, model, runtime)

    def __repr__(self) -> str:
        return f"CloudPool(providers={[p.name for p in self.config.providers]}, skipped={list(self.skipped)})"

    # -- what the router asks -------------------------------------------------------------
    def models(self) -> list[str]:
        return self.config.model_names()

    def has_model(self, name: str) -> bool:
        return bool(self.config.lookup(name))

    def n_ctx(self, name: str) -> int:
        """The smallest context among the providers of `name` (0: unknown)."""
        sizes = [m.context for _, m in self.config.lookup(name) if m.context]
        return min(sizes) if sizes else 0

    def price(self, name: str, provider: str | None = None) -> Price | None:
        """`name`'s price at `provider` (default: the first provider that serves it)."""
        for p, m in self.config.lookup(name):
            if provider is None or p.name == provider:
                return m.price
        return None

    def cooling_down(self) -> dict[str, float]:
        """Providers now benched, with the seconds left."""
        now = self._clock()
        return {n: h.cooldown_until - now for n, h in self.health.items() if h.cooldown_until > now}

    # -- serving --------------------------------------------------------------------------
    def chat(self, req: ChatRequest) -> CloudStream:
        return CloudStream(self, req)

    def runtime(self, name: str) -> CloudModelRuntime:
        """`name` as a Runtime (for a registry or a direct caller)."""
        if not self.has_model(name):
            raise KeyError(name)
        return CloudModelRuntime(self, name)

    async def close(self) -> None:
        for route in self._routes.values():
            await route.runtime.close()

    # -- bookkeeping used by CloudStream --------------------------------------------------
    def routes(self, name: str) -> tuple[list[_Route], list[str]]:
        """Usable routes for `name` in fallback order, and why the others were left out."""
        usable, left_out = [], []
        now = self._clock()
        for p, _ in self.config.lookup(name):
            if p.name in self.skipped:
                left_out.append(f"{p.name}: {self.skipped[p.name]}")
            elif self.health[p.name].cooldown_until > now:
                left_out.append(f"{p.name}: cooling down after repeated failures")
            else:
                usable.append(self._routes[(p.name, name.lower())])
        return usable, left_out

    def failed(self, provider: str) -> bool:
        """Count a failure; True when it benched the provider."""
        h = self.health[provider]
        h.consecutive_failures += 1
        if h.consecutive_failures >= self.config.cooldown_after:
            h.cooldown_until = self._clock() + self.config.cooldown_s
            log.warning(
                "cloud provider %s: %d failures in a row, cooling down for %.0f s",
                provider,
                h.consecutive_failures,
                self.config.cooldown_s,
            )
            return True
        return False

    def succeeded(self, provider: str) -> None:
        self.health[provider] = ProviderHealth()

    def backoff_s(self, attempt: int, exc: RuntimeError_) -> float | None:
        """The pause before retry number `attempt + 1` at the same provider; None: move on."""
        cap = self.config.backoff_max_s
        if isinstance(exc, Overloaded):
            return exc.retry_after_s if exc.retry_after_s <= cap else None
        base = self.config.backoff_base_s * (2**attempt)
        return min(cap, base * (0.5 + self._rng.random()))

    async def pause(self, seconds: float) -> None:
        await self._sleep(seconds)


def build_upstream(
    p: ProviderConfig,
    name: str,
    model: CloudModel,
    key: SecretStr | None,
    transport: httpx.AsyncBaseTransport | None,
) -> Runtime:
    timeouts = Timeouts(connect=p.connect_timeout_s, read=p.timeout_s)
    if p.kind == "anthropic":
        from runtimes.upstream.anthropic import AnthropicUpstream

        return AnthropicUpstream(
            p.base_url, model.upstream, id=name, api_key=key, provider=p.name, n_ctx=model.context,
            timeouts=timeouts, headers=p.headers, transport=transport,
        )  # fmt: skip
    from runtimes.upstream.openai_compat import OpenAICompatUpstream

    return OpenAICompatUpstream(
        p.base_url, model.upstream, id=name, api_key=key, provider=p.name, n_ctx=model.context,
        timeouts=timeouts, max_tokens_param=model.max_tokens_param, headers=p.headers, transport=transport,
    )  # fmt: skip


class NoFirstByte(UpstreamError):
    """A provider accepted the request and sent nothing within its `first_byte_timeout_s`."""

    def __init__(self, message: str):
        super().__init__(message, upstream_status=None, retryable=False)


def _retryable(exc: RuntimeError_) -> bool:
    return isinstance(exc, Overloaded) or (isinstance(exc, UpstreamError) and exc.retryable)


@dataclass
class CloudStream:
    """The events of one cloud answer. `served` is set once a provider produced its first event."""

    pool: CloudPool
    req: ChatRequest
    served: Served | None = None
    failures: list[str] = field(default_factory=list)  # "provider: error", for logs and the 503
    attempts: int = 0  # requests sent to providers so far
    statuses: list[str] = field(default_factory=list)  # "provider:429", "provider:conn" per failure
    silent: int = 0  # attempts given up on for sending nothing within first_byte_timeout_s
    _it: AsyncIterator[Event] | None = None
    _closed: bool = False

    @property
    def provider(self) -> str | None:
        return self.served.provider if self.served else None

    def __aiter__(self) -> CloudStream:
        return self

    async def __anext__(self) -> Event:
        if self._closed:
            raise StopAsyncIteration
        if self._it is None:
            return await self._open()
        try:
            return await self._it.__anext__()
        except (UpstreamError, Overloaded):
            assert self.served is not None
            self.pool.failed(self.served.provider)  # mid-stream: counted, not retried
            raise

    async def aclose(self) -> None:
        self._closed = True
        if self._it is not None:
            it, self._it = self._it, None
            await _close(it)

    async def _open(self) -> Event:
        routes, left_out = self.pool.routes(self.req.model)
        self.failures += left_out
        for route in routes:
            for attempt in range(route.provider.max_retries + 1):
                outcome = await self._try(route)
                if isinstance(outcome, Event):
                    return outcome
                if not await self._again(route, attempt, outcome):
                    break
        raise self._unavailable(bool(routes))

    async def _try(self, route: _Route) -> Event | RuntimeError_:
        """One request to one provider: its first event, or the retryable error it failed with."""
        self.attempts += 1
        it = route.runtime.chat(dataclasses.replace(self.req, model=route.runtime.id))
        wait_s = route.provider.first_byte_timeout_s
        try:
            async with asyncio.timeout(wait_s):
                first = await it.__anext__()
        except TimeoutError:
            await _close(it)
            self.silent += 1
            return NoFirstByte(f"{route.provider.name} sent nothing within {wait_s:g} s")
        except StopAsyncIteration:
            await _close(it)
            return UpstreamError(f"{route.provider.name} sent an empty stream")
        except (UpstreamError, Overloaded) as exc:
            await _close(it)
            return exc
        except BaseException:  # a bad request, a cancellation: not for another provider
            await _close(it)
            raise
        self.pool.succeeded(route.provider.name)
        self._it = it
        m = route.model
        self.served = Served(route.provider.name, self.req.model, m.upstream, m.price, self.attempts)
        return first

    async def _again(self, route: _Route, attempt: int, exc: RuntimeError_) -> bool:
        """Record the failure; pause and say True when the same provider deserves another try."""
        self.failures.append(f"{route.provider.name}: {exc}")
        status = exc.upstream_status if isinstance(exc, UpstreamError) else exc.status
        label = "silent" if isinstance(exc, NoFirstByte) else status or "conn"
        self.statuses.append(f"{route.provider.name}:{label}")
        benched = self.pool.failed(route.provider.name)
        delay = self.pool.backoff_s(attempt, exc)
        if benched or not _retryable(exc) or delay is None or attempt == route.provider.max_retries:
            return False
        await self.pool.pause(delay)
        return True

    def _unavailable(self, tried: bool) -> CloudUnavailable:
        model = self.req.model
        if not self.pool.has_model(model):
            return CloudUnavailable(f"no cloud provider serves the model '{model}'", reason="unknown-model")
        detail = "; ".join(self.failures) or "no provider configured"
        reason = "all-failed" if tried else "cooling-down"
        if tried and self.silent == self.attempts:
            reason = "timeout"  # every provider tried accepted and then said nothing
        # Only provider names and statuses: an upstream's message may quote the prompt.
        log.warning("cloud model %s unavailable: %s", model, ", ".join(self.statuses) or reason)
        return CloudUnavailable(f"cloud model '{model}' is unavailable: {detail}", reason=reason)


async def _close(it: AsyncIterator[Event]) -> None:
    closer = getattr(it, "aclose", None)
    if closer is not None:
        await closer()


@dataclass
class CloudModelRuntime(Runtime):
    """One cloud model of the pool as a Runtime."""

    pool: CloudPool
    id: str

    @property
    def n_ctx(self) -> int:
        return self.pool.n_ctx(self.id)

    def chat(self, req: ChatRequest) -> CloudStream:
        return self.pool.chat(dataclasses.replace(req, model=self.id))

    async def complete(self, req: CompletionRequest) -> AsyncIterator[Event]:
        raise InvalidRequest("Text completions are not sent to cloud models; use chat completions.")
        yield Event()  # pragma: no cover  (makes this an async generator, like every runtime's)

    def stats(self) -> RuntimeStats:
        return RuntimeStats(loaded=True)

    async def close(self) -> None:
        return None
