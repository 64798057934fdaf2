"""`create_app(registry)`: the appliance's HTTP face, an OpenAI-compatible FastAPI app.

The app owns no model: it answers for whatever runtimes the registry holds, so the
CLI can start listening (and report 503 on /health) before loading finishes, and
tests can serve a scripted runtime through the very same code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from appliance.api.anthropic.routes import build_anthropic_router
from appliance.api.errors import error_body, install_error_handlers
from appliance.api.metrics import Metrics
from appliance.api.middleware import RequestContext
from appliance.api.openai.routes import build_openai_router
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
) -> FastAPI:
    """An app serving `registry`'s runtimes.

    api_key: when set, every route but /health needs `Authorization: Bearer <key>`.
    close_runtimes_on_shutdown: close the runtimes when the server stops (for
    `appliance serve`; tests that reuse a registry leave it False).
    routing: the router, cloud client and usage log (`appliance serve` builds them);
    None: a local-only router and no usage log.
    """
    routing = routing or Routing(local_only_router(registry))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if close_runtimes_on_shutdown:
            await registry.close()
            if routing.cloud is not None:
                await routing.cloud.close()
            if routing.usage is not None:
                routing.usage.close()

    app = FastAPI(title="appliance", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    metrics = Metrics(registry)
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.routing = routing
    app.state.cloud = routing.cloud  # None in air-gapped mode: no cloud client exists
    install_error_handlers(app)
    app.add_middleware(RequestContext, metrics=metrics, api_key=api_key)
    # Every chat dialect (OpenAI's routes, Anthropic's /v1/messages) routes through this one dispatcher.
    app.state.dispatcher = dispatcher = ChatDispatcher(registry, metrics, routing)
    app.include_router(build_openai_router(registry, metrics, dispatcher))
    app.include_router(build_anthropic_router(dispatcher))

    @app.get("/health")
    async def health() -> JSONResponse:
        if registry.ready:
            return JSONResponse({"status": "ok", "models": [rt.id for rt in registry.runtimes()]})
        body = {"status": "loading", **error_body("The model is loading.", "server_error", "model_loading")}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    return app


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
