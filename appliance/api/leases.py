"""A request's hold on its local model, from routing until its generation closes, so the
model it runs on is never unloaded under it (serve/residency.py unloads only unleased models).
Taking the lease is also what loads an installed model a request names when it is not loaded.
"""

from __future__ import annotations

import asyncio

from appliance.api.errors import ApiError
from appliance.api.keep_alive import BadKeepAlive, parse_keep_alive
from appliance.api.on_demand import LoadRefused, OnDemand
from appliance.api.registry import ModelNotFound, ModelRegistry


class Leases:
    def __init__(self, models: ModelRegistry, on_demand: OnDemand | None):
        self.models, self.on_demand = models, on_demand
        self._releasing: set[asyncio.Task[None]] = set()

    async def take(self, target: str, keep_alive: object = None) -> str | None:
        """Lease the local model `target` names (loading it if installed and not loaded); the
        model id, or None when there is nothing to hold (a cloud name, no residency, loading).
        ApiError: a bad keep_alive (400), or why the model could not be had (404/503)."""
        try:
            wanted = parse_keep_alive(keep_alive)
        except BadKeepAlive as e:
            raise ApiError(400, str(e), param="keep_alive", code="invalid_value") from None
        if self.on_demand is None or self.models.loading:
            return None
        try:
            model_id = self.models.resolve(target).id
        except ModelNotFound as exc:
            if exc.catalog_id is None:
                return None
            model_id = exc.catalog_id
        try:
            await self.on_demand.acquire(model_id, wanted)
        except LoadRefused as e:
            headers = {"Retry-After": str(e.retry_after_s)} if e.retry_after_s else None
            kind = "invalid_request_error" if e.status < 500 else "server_error"
            raise ApiError(e.status, str(e), type=kind, code=e.code, param="model", headers=headers) from None
        return model_id

    def give_back(self, model_id: str | None) -> None:
        """Release a lease from synchronous code (a generation's close hook)."""
        if model_id is None or self.on_demand is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # closed outside the event loop: nothing to schedule on
            return
        task = loop.create_task(self.on_demand.release(model_id))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
