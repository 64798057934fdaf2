"""`/api/ps` and `/api/unload`: which models are in memory, where, and how busy (Ollama's
`/api/ps` is the precedent; `appliance ps` and `appliance unload` are their CLI), and
handing a model's memory back on demand. Behind the API key like every other route."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from appliance.api.errors import ApiError
from appliance.api.on_demand import LoadRefused
from appliance.api.registry import ModelNotFound
from appliance.api.routing import Routing


def build_ps_router(routing: Routing) -> APIRouter:
    router = APIRouter()

    @router.get("/api/ps")
    async def ps(request: Request) -> JSONResponse:
        return JSONResponse({"models": loaded_models(request)})

    @router.post("/api/unload")
    async def unload(request: Request) -> JSONResponse:
        body = await _json(request)
        name = body.get("model")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "Send {\"model\": NAME} naming a loaded model.", param="model")
        if routing.on_demand is None:
            raise ApiError(404, "This server does not unload models.", code="not_supported")
        try:
            model_id = request.app.state.registry.resolve(name).id
        except ModelNotFound:
            raise ApiError(404, f"{name} is not loaded.", param="model", code="model_not_found") from None
        try:
            await routing.on_demand.unload(model_id)
        except LoadRefused as e:
            raise ApiError(e.status, str(e), param="model", code=e.code) from None
        return JSONResponse({"unloaded": model_id})

    def loaded_models(request: Request) -> list[dict[str, Any]]:
        if routing.on_demand is not None:
            return routing.on_demand.status()
        registry = request.app.state.registry
        rows = [{"model": rt.id, "state": "loaded"} for rt in registry.runtimes()]
        return [{**row, "roles": registry.roles_of(row["model"])} for row in rows]

    return router


async def _json(request: Request) -> dict[str, Any]:
    import json

    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return body
