"""The console's JSON endpoints, under /console/api/: what the page in static/ draws.

Each reads what the API already keeps, through the code that keeps it: the registry and
the runtimes' own stats, the in-memory live window (api/live.py), the usage log (the audit
rows, and `appliance usage`'s own `summarize`/`totals` for spend), bench's results folder.
Nothing here holds or returns prompt or answer text. All but /console/api/access need the
API key when keys are on (the middleware's rule for every route).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, JSONResponse

from appliance.api.console import bench
from appliance.api.console.facts import ModelFacts, ServeFacts
from appliance.api.console.page import ACCESS_PATH
from appliance.api.errors import ApiError
from appliance.api.guard import AccessPolicy
from appliance.api.metrics import Metrics
from appliance.api.registry import ModelRegistry
from appliance.api.routing import Routing
from appliance.paths import data_dir
from appliance.usage import audit
from appliance.usage.report import summarize, totals
from runtimes.base import Runtime, RuntimeStats

NO_STORE = {"Cache-Control": "no-store"}


def build_console_router(
    registry: ModelRegistry, metrics: Metrics, routing: Routing, access: AccessPolicy, facts: ServeFacts
) -> APIRouter:
    router = APIRouter()
    settings = routing.router.settings

    @router.get(ACCESS_PATH, include_in_schema=False)
    def access_info() -> JSONResponse:
        """Public: lets the page ask for a key before calling anything that would refuse it."""
        return _json({"keys_required": access.keys_required()})

    @router.get("/console/api/overview", include_in_schema=False)
    async def overview() -> JSONResponse:  # on the event loop: no I/O, and where residency changes
        dl = registry.download
        plans = facts.plans()
        return _json({
            "ready": registry.ready,
            "loading": registry.loading,
            "download": asdict(dl) if dl is not None else None,
            "machine": facts.machine,
            "models": [_model(registry, plans.get(rt.id), rt) for rt in registry.runtimes()],
            "routing": {
                "air_gapped": settings.air_gapped,
                "cloud_enabled": routing.cloud is not None,
                "cloud_models": sorted(routing.router.cloud.models),
                "daily_budget_usd": settings.daily_budget_usd,
            },
        })

    @router.get("/console/api/live", include_in_schema=False)
    def live() -> JSONResponse:
        stats = [_stats(rt) for rt in registry.runtimes()]
        return _json({
            **metrics.live.snapshot(),
            "in_flight": int(_gauge_sum(metrics.in_flight)),
            "queued": sum(s.queue_depth for s in stats),
            "slots_busy": sum(s.slots_busy for s in stats),
            "slots_total": sum(s.slots_total for s in stats),
        })

    @router.get("/console/api/audit", include_in_schema=False)
    def audit_rows(
        limit: int = Query(50, ge=1, le=1000),
        route: str | None = Query(None, pattern="^(local|cloud|refused)$"),
    ) -> JSONResponse:
        path = _usage_path(routing)
        return _json({
            "logged": path is not None,
            "air_gapped": settings.air_gapped,
            "refused_cloud": audit.refused_cloud(path) if path else 0,
            "rows": [asdict(r) for r in audit.recent(path, limit, route)] if path else [],
        })

    @router.get("/console/api/spend", include_in_schema=False)
    def spend(days: int = Query(30, ge=1, le=3660)) -> JSONResponse:
        usage = routing.usage
        if usage is None:
            return _json({"logged": False, "rows": []})
        ref_name = settings.reference_cloud_model
        reference = usage.prices.get(ref_name) if ref_name else None
        rows = summarize(usage.path, reference, days)  # `appliance usage`'s numbers, its code
        spent, all_cloud = totals(rows)
        return _json({
            "logged": True,
            "days": days,
            "rows": [asdict(r) for r in rows],
            "spent_usd": spent,
            "all_cloud_usd": all_cloud if reference is not None else None,
            "reference_model": ref_name if reference is not None else None,
            "spent_today_usd": usage.spent_today(),
            "daily_budget_usd": settings.daily_budget_usd,
        })

    @router.get("/console/api/bench", include_in_schema=False)
    def bench_runs() -> JSONResponse:
        return _json({"folder": str(_bench_dir(facts)), "runs": bench.runs(_bench_dir(facts))})

    @router.get("/console/api/bench/{name}.png", include_in_schema=False)
    def bench_chart(name: str) -> FileResponse:
        path = bench.chart_path(_bench_dir(facts), name)
        if path is None:
            raise ApiError(404, f"no chart for bench run {name!r}", code="not_found")
        return FileResponse(path, media_type="image/png", headers=NO_STORE)

    return router


def _model(registry: ModelRegistry, planned: ModelFacts | None, rt: Runtime) -> dict[str, Any]:
    """What the runtime says about itself now, beside the plan it was loaded by."""
    s = _stats(rt)
    return {
        "id": rt.id,
        "roles": registry.roles_of(rt.id),
        "n_ctx": rt.n_ctx,
        "loaded": s.loaded,
        "slots_total": s.slots_total,
        "slots_busy": s.slots_busy,
        "queued": s.queue_depth,
        "plan": asdict(planned) if planned is not None else None,
    }


def _stats(rt: Runtime) -> RuntimeStats:
    try:
        return rt.stats()
    except Exception:  # one broken runtime must not blank the whole page
        return RuntimeStats()


def _gauge_sum(gauge: Any) -> float:
    return sum(sample.value for family in gauge.collect() for sample in family.samples)


def _usage_path(routing: Routing) -> Path | None:
    return routing.usage.path if routing.usage is not None else None


def _bench_dir(facts: ServeFacts) -> Path:
    return facts.bench_dir or data_dir() / "bench"


def _json(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=NO_STORE)
