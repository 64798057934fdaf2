"""What the API needs from whoever keeps models in memory (serve/residency.py): a lease on a
model's runtime for the length of a request, loading it first when it is installed but not
loaded, and the errors that say why it could not be had. Defined here, on the API's side, so
the API never imports the composition root that implements it.
"""

from __future__ import annotations

from typing import Protocol

from appliance.api.keep_alive import KeepAlive
from runtimes.base import Runtime


class LoadRefused(Exception):
    """A model could not be had for this request; `status` is the HTTP answer."""

    status = 503
    code = "model_not_loaded"
    retry_after_s: int | None = None


class NotServable(LoadRefused):
    """Not installed, or cannot run on this machine at all."""

    status = 404
    code = "model_not_found"


class NoRoom(LoadRefused):
    """It does not fit beside the models that may not be unloaded now."""

    code = "insufficient_memory"
    retry_after_s = 30


class LoadTimeout(LoadRefused):
    """Still loading after the wait a request may spend on it."""

    code = "model_loading"
    retry_after_s = 10


class Busy(LoadRefused):
    """An unload asked for a model with requests in flight."""

    status = 409
    code = "model_busy"


class OnDemand(Protocol):
    async def acquire(self, model_id: str, keep_alive: KeepAlive | None = None) -> Runtime:
        """The runtime, loaded if needed, with a lease the caller must release."""
        ...

    async def release(self, model_id: str) -> None: ...

    async def unload(self, model_id: str) -> object: ...

    async def run_reaper(self, every_s: float = 1.0) -> None: ...

    def status(self) -> list[dict]:
        """`/api/ps`: one row per loaded or loading model."""
        ...
