"""`create_app(registry)`: the appliance's HTTP face, an OpenAI-compatible FastAPI app.

The app owns no model: it answers for whatever runtimes the registry holds, so the
CLI can start listening (and report 503 on /health) before loading finishes, and
tests can serve a scripted runtime through the very same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from appliance.api.anthropic.routes import build_anthropic_router
from appliance.api.console import ServeFacts, build_console_router, build_page_router
from appliance.api.errors import error_body, install_error_handlers
from appliance.api.guard import AccessPolicy
from appliance.api.limits import DEFAULT_LIMITS, Limits
from appliance.api.metrics import Metrics
from appliance.api.middleware import RequestContext
from appliance.api.openai.routes import build_openai_router
from appliance.api.openapi import install_openapi
from appliance.api.ps import build_ps_router
from appliance.api.registry import ModelNotFound, ModelRegistry
from appliance.api.routing import ChatDispatcher, Routing
from appliance.router.decide import CloudSide, Router
from appliance.router.settings import RouterSettings


def create_app(
    registry: ModelRegistry,
    *,
    api_key: str | None = None,
    close_runtimes_on_shutdown: bool = False,
    routing: Routing | None = None,
    access: AccessPolicy | None = None,
    limits: Limits | None = None,
    facts: ServeFacts | None = None,
) -> FastAPI:
    """An app serving `registry`'s runtimes.

    api_key: when set, every route but /health needs `Authorization: Bearer <key>`.
    close_runtimes_on_shutdown: close the runtimes when the server stops (for
    `appliance serve`; tests that reuse a registry leave it False).
    routing: the router, cloud client and usage log (`appliance serve` builds them);
    None: a local-only router and no usage log.
    access: Host names, browser origins and keys (guard.py); None: loopback names only, no
    origins, `api_key` if given.
    limits: body size, nesting and counts (limits.py); None: the defaults.
    facts: the machine and each model's plan, for the console (serve fills it as it loads).
    """
    routing = routing or Routing(local_only_router(registry))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        reaper = asyncio.create_task(routing.on_demand.run_reaper()) if routing.on_demand else None
        yield
        if reaper is not None:
            reaper.cancel()
        if close_runtimes_on_shutdown:
            await registry.close()
            if routing.cloud is not None:
                await routing.cloud.close()
            if routing.usage is not None:
                routing.usage.close()

    # /openapi.json: behind the same key and Host rules as every route but /health (openapi.py)
    app = FastAPI(title="appliance", docs_url=None, redoc_url=None, lifespan=lifespan)
    install_openapi(app)
    metrics = Metrics(registry)
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.routing = routing
    app.state.cloud = routing.cloud  # None in air-gapped mode: no cloud client exists
    install_error_handlers(app)
    limits = limits or DEFAULT_LIMITS
    app.state.limits = limits
    access = access or AccessPolicy(api_key=api_key)
    app.add_middleware(RequestContext, metrics=metrics, access=access, max_body_bytes=limits.max_body_bytes)
    # Every chat dialect (OpenAI's routes, Anthropic's /v1/messages) routes through this one dispatcher.
    app.state.dispatcher = dispatcher = ChatDispatcher(registry, metrics, routing)
    app.include_router(build_openai_router(registry, metrics, dispatcher))
    app.include_router(build_anthropic_router(dispatcher))
    app.include_router(build_ps_router(routing))
    app.state.facts = facts = facts or ServeFacts()
    app.include_router(build_page_router())  # the console at /, and its JSON (console/)
    app.include_router(build_console_router(registry, metrics, routing, access, facts))

    @app.get("/health")
    async def health() -> JSONResponse:
        if registry.ready:
            body = {"status": "ok", "models": [rt.id for rt in registry.runtimes()]}
            if routing.on_demand is not None:  # where each sits and how busy (as `appliance ps`)
                body["loaded"] = routing.on_demand.status()
            return JSONResponse(body)
        return JSONResponse(_not_ready(registry), status_code=503, headers={"Retry-After": "5"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    return app


def _not_ready(registry: ModelRegistry) -> dict:
    """/health's 503 body: loading, or downloading with the bytes so far (an OpenAI-shaped error
    too, for clients that treat any non-200 as one)."""
    dl = registry.download
    if dl is None:
        return {"status": "loading", **error_body("The model is loading.", "server_error", "model_loading")}
    return {
        "status": "downloading", "model": dl.model,
        "done_bytes": dl.done_bytes, "total_bytes": dl.total_bytes,
        **error_body(f"Downloading {dl.model} before loading it.", "server_error", "model_loading"),
    }


def local_lookup(registry: ModelRegistry):
    """The router's view of the registry: the runtime for a name, or None."""

    def lookup(name: str):
        try:
            return registry.resolve(name)
        except ModelNotFound:
            return None

    return lookup


def local_only_router(registry: ModelRegistry) -> Router:
    return Router(RouterSettings(), local_for=local_lookup(registry), cloud=CloudSide())
