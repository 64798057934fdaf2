"""The one place where a chat request is routed, started, headed and recorded.

Both dialects (/v1/chat/completions and Anthropic's /v1/messages) call
`start_chat`: it asks the router for local or cloud, starts that runtime and waits
for its first event, falls back to local when the cloud fails before its first
token, and hooks the usage log into the generation's close. The caller only turns
the started generation into its dialect; the `x-appliance-*` headers come from
here, so every response (streamed too) says where it ran and why.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from fastapi import Request

from appliance.api.choices import fan_out
from appliance.api.errors import ApiError
from appliance.api.generation import Generation, start
from appliance.api.leases import Leases
from appliance.api.metrics import Metrics
from appliance.api.on_demand import OnDemand
from appliance.api.registry import MAIN_ROLE, ModelNotFound, ModelRegistry
from appliance.router.capacity import fits_context
from appliance.router.decide import LOCAL_NAMES, CloudSide, Decision, Refusal, Router, RouteRequest
from appliance.usage.log import UsageLog
from runtimes.base import ChatRequest, CloudUnavailable, Event, Runtime, Usage
from runtimes.upstream.pool import Served

log = logging.getLogger("appliance.api")


class CloudEvents(Protocol):
    """One cloud answer's events; `served` says which provider answered and at what price,
    once one produced its first event (None before, or if none did)."""

    served: Served | None

    def __aiter__(self) -> AsyncIterator[Event]: ...


class CloudClient(Protocol):
    """The cloud side as the API uses it: a chat stream for a cloud model name that raises
    CloudUnavailable before its first event when no provider could answer."""

    def chat(self, req: ChatRequest) -> CloudEvents: ...

    async def close(self) -> None: ...


@dataclass
class Routing:
    """What `create_app` needs for routing; `cloud` is None in air-gapped mode (never built)."""

    router: Router
    cloud: CloudClient | None = None
    usage: UsageLog | None = None
    on_demand: OnDemand | None = None  # loads installed models a request names (serve/residency.py)


@dataclass
class _Call:
    """One chat request on its way through the dispatcher: what every step needs to start
    it or to record it."""

    request: Request
    req: ChatRequest
    requested: str  # the model name the client asked for ("" when it sent none)
    target: str  # the name routed: `requested`, or the main role in its place (see lenient_target)
    started: float = field(default_factory=time.perf_counter)
    wall: float = field(default_factory=time.time)


@dataclass
class Started:
    gen: Generation
    model: str  # the model that serves it (runtime id or cloud model name)
    headers: dict[str, str]
    fingerprint: str | None = None  # OpenAI's system_fingerprint, where the runtime has one


def lenient_target(models: ModelRegistry, cloud: CloudSide, name: str | None) -> tuple[str, str | None]:
    """The model name to route, and the reason tag when the main model stands in for it.

    Clients written for llama-server send no model, or whatever name their config holds
    (`gpt-3.5-turbo`), and expect the server's model: a name nobody knows (not loaded, not
    in the catalog, not a cloud model) goes to the main model. A catalog model that is not
    loaded keeps its 404 (the client asked for something specific we lack), a cloud name
    keeps its route (or its refusal when air-gapped), and while loading names are not judged.
    """
    if name is None or not name.strip():
        return MAIN_ROLE, "model:missing"
    if name.strip().lower() in LOCAL_NAMES or cloud.knows(name) or models.loading:
        return name, None
    try:
        models.resolve(name)
    except ModelNotFound as exc:
        if exc.catalog_id is None:
            return MAIN_ROLE, "model:unknown"
    return name, None


def route_headers(route: str, reason: str, model: str) -> dict[str, str]:
    return {"x-appliance-route": route, "x-appliance-reason": reason, "x-appliance-model": model}


def client_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def key_name(request: Request) -> str:
    """The name of the API key the request came with (the middleware set it), '' if none."""
    return str(request.scope.get("state", {}).get("key_name", ""))


def dialect_of(request: Request) -> str:
    """The API the client spoke, for the audit: Anthropic's /v1/messages or OpenAI's routes."""
    return "anthropic" if request.url.path.startswith("/v1/messages") else "openai"


def resolve_local(models: ModelRegistry, name: str) -> Runtime:
    """The loaded runtime for `name`; 503 while loading, 404 naming what is loaded."""
    try:
        return models.resolve(name)
    except ModelNotFound as exc:
        if models.loading:
            raise ApiError(
                503,
                "The model is still loading; retry shortly.",
                type="server_error",
                code="model_loading",
                headers={"Retry-After": "5"},
            ) from None
        hint = f" (it is in the catalog as {exc.catalog_id} but not loaded)" if exc.catalog_id else ""
        loaded = ", ".join(rt.id for rt in models.runtimes()) or "none"
        raise ApiError(
            404,
            f"The model '{name}' does not exist{hint}. Loaded: {loaded}.",
            param="model",
            code="model_not_found",
        ) from None


class ChatDispatcher:
    """Routes and starts chat requests for one app."""

    def __init__(self, models: ModelRegistry, metrics: Metrics, routing: Routing):
        self.models = models
        self.metrics = metrics
        self.routing = routing
        self.leases = Leases(models, routing.on_demand)

    def target(self, requested: str | None) -> tuple[str, str | None]:
        """`lenient_target` against this app's registry and cloud names."""
        return lenient_target(self.models, self.routing.router.cloud, requested)

    async def start_chat(
        self, request: Request, req: ChatRequest, requested: str | None, keep_alive: object = None
    ) -> Started:
        """Decide, start, wait for the first event; raises ApiError (recorded) or ClientGone.
        The local model the request names is leased (loaded first if need be) until it ends."""
        target, note = self.target(requested)
        leased = await self.leases.take(target, keep_alive)
        try:
            started = await self._start(_Call(request, req, requested or "", target), requested, note)
        except BaseException:
            self.leases.give_back(leased)
            raise
        record = started.gen.on_close

        def close(gen: Generation) -> None:
            self.leases.give_back(leased)
            if record is not None:
                record(gen)

        started.gen.on_close = close
        return started

    async def _start(self, call: _Call, requested: str | None, note: str | None) -> Started:
        request, req, target = call.request, call.req, call.target
        rr = RouteRequest(
            model=target,
            requested=requested,
            chat=req,
            route_header=request.headers.get("x-appliance-route"),
            project_header=request.headers.get("x-appliance-project"),
            api_key=client_key(request),
            key_name=key_name(request),
        )
        try:
            decision = self.routing.router.decide(rr)
        except Refusal as r:
            reason = f"{r.reason},{note}" if note else r.reason
            self._record_early(call, "refused", reason, "", str(r.status))
            headers = {**r.headers, "x-appliance-reason": reason}  # Retry-After on a full queue
            raise ApiError(r.status, r.message, type=r.type, code=r.code, headers=headers) from None
        if note:
            decision = dataclasses.replace(decision, reason=f"{decision.reason},{note}")
        if decision.route == "cloud" and self.routing.cloud is not None:
            try:
                return await self._run(call, decision)
            except CloudUnavailable as exc:
                return await self._fallback(call, decision, exc)
        return await self._run(call, decision)

    async def _fallback(self, call: _Call, decision: Decision, exc: CloudUnavailable) -> Started:
        """The cloud failed before its first token: serve locally if it fits, else 502/503."""
        why = exc.reason or "unavailable"
        reason = f"cloud-failed:{why},fallback"
        runtime = self._local_or_none(call.target)
        if runtime is None or not fits_context(runtime, call.req):
            reason = f"{decision.reason},cloud-failed:{why}"
            self._record_early(call, "cloud", reason, decision.model, "503")
            raise ApiError(
                503,
                f"The cloud provider is unavailable and the request cannot run locally: {exc}",
                type="server_error",
                code="cloud_unavailable",
                headers={"x-appliance-reason": reason},
            ) from None
        return await self._run(call, Decision("local", reason, runtime.id, runtime))

    async def _run(self, call: _Call, decision: Decision) -> Started:
        cloud: CloudEvents | None = None
        events: AsyncIterator[Event]
        fingerprint: str | None = None
        if decision.route == "cloud":
            assert self.routing.cloud is not None
            model = decision.model
            if call.req.n > 1:
                self._record_early(call, "cloud", decision.reason, model, "400")
                raise ApiError(
                    400, "n > 1 is served by local models only; this request was routed to the cloud.",
                    param="n", code="unsupported_value", headers={"x-appliance-reason": decision.reason},
                )
            events = cloud = self.routing.cloud.chat(dataclasses.replace(call.req, model=model))
        else:
            runtime = decision.runtime or self._resolve_recorded(call, decision)
            model, fingerprint = runtime.id, runtime.system_fingerprint()
            local = dataclasses.replace(call.req, model=model)
            events = runtime.chat(local) if local.n == 1 else fan_out(runtime.chat, local)
        gen = Generation(
            events,
            model=model,
            request_id=call.req.request_id,
            route=decision.route,
            metrics=self.metrics,
            started=call.started,
        )
        gen.on_close = self.recorder(
            decision, call.requested, cloud, call.wall, key_name(call.request), dialect_of(call.request)
        )
        await start(call.request, gen)
        return Started(gen, model, route_headers(decision.route, decision.reason, model), fingerprint)

    def _local_or_none(self, requested: str) -> Runtime | None:
        for name in (requested, MAIN_ROLE):
            try:
                return self.models.resolve(name)
            except ModelNotFound:
                continue
        return None

    def _resolve_recorded(self, call: _Call, decision: Decision) -> Runtime:
        try:
            return resolve_local(self.models, call.target)
        except ApiError as e:
            self._record_early(call, "local", decision.reason, "", str(e.status))
            raise

    def recorder(
        self,
        decision: Decision,
        requested: str,
        cloud: CloudEvents | None = None,
        wall: float | None = None,
        key: str = "",
        dialect: str = "openai",
    ) -> Callable[[Generation], None]:
        """What a generation calls on close: the usage row, and local timing for queue estimates.

        cloud: the cloud stream being served (None for a local answer), which knows the
        provider that answered and its price. key: the API key's name, for attribution.
        dialect: the API the client spoke (only /v1/messages is not OpenAI's), for the audit.
        """
        usage, router = self.routing.usage, self.routing.router
        wall = time.time() if wall is None else wall

        def record(gen: Generation) -> None:
            elapsed = time.perf_counter() - gen.started
            if decision.route == "local" and gen.outcome == "ok":
                router.queue.observe(elapsed)
            if usage is None:
                return
            u = gen.usage or Usage()
            served = cloud.served if cloud is not None else None
            provider = served.provider if served else decision.route
            cost = served.cost(u) if served is not None and gen.usage is not None else None
            usage.record(
                started=wall,
                route=decision.route,
                reason=decision.reason,
                requested_model=requested,
                served_model=gen.model,
                provider=provider,
                prompt_tokens=u.prompt_tokens,
                cached_tokens=u.cached_tokens,
                completion_tokens=u.completion_tokens,
                latency_ms=elapsed * 1000,
                status=gen.outcome,
                cost_usd=cost,
                key_name=key,
                dialect=dialect,
            )

        return record

    def _record_early(self, call: _Call, route: str, reason: str, served: str, status: str) -> None:
        """The usage row of a request that ended before any generation started."""
        if self.routing.usage is not None:
            self.routing.usage.record(
                started=call.wall,
                route=route,
                reason=reason,
                requested_model=call.requested,
                served_model=served,
                provider="",
                latency_ms=(time.perf_counter() - call.started) * 1000,
                status=status,
                key_name=key_name(call.request),
                dialect=dialect_of(call.request),
            )
