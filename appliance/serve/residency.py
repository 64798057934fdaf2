"""Which models are in memory: loaded when a request names them, unloaded when idle or when
another model needs the room.

A request for an installed model that is not loaded loads it (Ollama's way, and llama-server's
router mode). Room is counted from the plan, not from what the OS reports after loading (mmap'd
weights look like free page cache): the machine as serve found it, minus what each resident's
plan holds on the GPU and in RAM. When a model does not fit, the least recently used idle model
is unloaded first. A model with requests in flight is never unloaded, and neither are the
models serve started with (the agent's main model and its side-task model) unless a request's
`keep_alive` or `appliance unload` says so. Requests for a model that is loading wait for it,
up to `load_wait_s`. Loads run in a worker thread, one at a time, so every other model's
streams go on while the weights are read.

keep_alive (per request, as Ollama takes it: seconds, "5m", 0 = unload when done, negative =
keep) and `idle_unload_s` (config) unload idle models to give memory back to other programs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.api.keep_alive import KeepAlive
from appliance.api.on_demand import Busy, LoadTimeout, NoRoom, NotServable
from appliance.api.registry import ModelRegistry
from appliance.hardware.types import Hardware
from appliance.serve.choice import LoadSpec, ServeError
from runtimes.base import Runtime

log = logging.getLogger("appliance.serve")

# (model id, resident specs) -> its spec beside them; ServeError: it does not fit beside them;
# NotServable: it never could (not installed, unknown).
PlanOne = Callable[[str, list[LoadSpec]], LoadSpec]
Load = Callable[[LoadSpec], Runtime]  # blocking: runs in a worker thread
KEEP = KeepAlive(None)  # until the room is needed


__all__ = ["Busy", "LoadTimeout", "NoRoom", "NotServable", "Residency", "Resident", "room_left"]


@dataclass
class Resident:
    spec: LoadSpec
    runtime: Runtime
    pinned: bool  # started with serve: never unloaded for room or idleness unless asked
    last_used: float
    keep_alive: KeepAlive  # seconds None: until the room is needed (or idle_unload_s, unpinned)
    leases: int = 0
    loaded_at: float = field(default_factory=time.monotonic)


class Residency:
    """The resident models and the one place that loads and unloads them."""

    def __init__(
        self,
        registry: ModelRegistry,
        plan_one: PlanOne,
        load: Load,
        *,
        idle_unload_s: float | None = None,
        load_wait_s: float = 300.0,
        max_loaded: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.registry = registry
        self._plan_one, self._load = plan_one, load
        self.idle_unload_s, self.load_wait_s, self.max_loaded = idle_unload_s, load_wait_s, max_loaded
        self._clock = clock
        self._residents: dict[str, Resident] = {}  # runtime id (lower) -> resident
        self._loading: dict[str, asyncio.Task[Runtime]] = {}
        self._load_lock = asyncio.Lock()  # one load (and its evictions) at a time

    # -- what serve started with --------------------------------------------------------------
    def adopt(self, spec: LoadSpec, runtime: Runtime) -> None:
        """A model serve loaded at start: resident, pinned."""
        self._residents[runtime.id.lower()] = Resident(spec, runtime, True, self._clock(), KEEP)

    # -- requests -----------------------------------------------------------------------------
    def is_resident(self, model_id: str) -> bool:
        return model_id.lower() in self._residents

    async def acquire(self, model_id: str, keep_alive: KeepAlive | None = None) -> Runtime:
        """The model's runtime with a lease on it (release it when the request ends), loading
        it first if needed. keep_alive: None leaves the model's setting as it is."""
        key = model_id.lower()
        resident = self._residents.get(key)
        if resident is None:
            task = self._loading.get(key)
            if task is None:
                task = self._loading[key] = asyncio.ensure_future(self._load_one(model_id))
                task.add_done_callback(lambda _t, k=key: self._loading.pop(k, None))
            try:
                await asyncio.wait_for(asyncio.shield(task), self.load_wait_s)
            except TimeoutError:
                raise LoadTimeout(f"{model_id} is still loading after {self.load_wait_s:.0f} s") from None
            resident = self._residents[key]
        resident.leases += 1
        resident.last_used = self._clock()
        if keep_alive is not None:
            resident.keep_alive = keep_alive
        return resident.runtime

    async def release(self, model_id: str) -> None:
        """A request on this model ended; `keep_alive: 0` unloads it now that it is idle."""
        resident = self._residents.get(model_id.lower())
        if resident is None:
            return
        resident.leases = max(0, resident.leases - 1)
        resident.last_used = self._clock()
        if resident.leases == 0 and resident.keep_alive.now:
            await self._unload(resident)

    async def unload(self, model_id: str) -> LoadSpec:
        """`appliance unload MODEL`: refused while it has requests in flight."""
        resident = self._residents.get(model_id.lower())
        if resident is None:
            raise NotServable(f"{model_id} is not loaded")
        if resident.leases:
            raise Busy(f"{resident.runtime.id} has {resident.leases} request(s) in flight")
        await self._unload(resident)
        return resident.spec

    async def unload_idle(self) -> list[str]:
        """Unload every model whose keep_alive (or idle_unload_s) ran out; what was unloaded."""
        now, gone = self._clock(), []
        for r in list(self._residents.values()):
            ttl = r.keep_alive.seconds if r.keep_alive.seconds is not None else (
                None if r.pinned else self.idle_unload_s
            )
            if r.leases == 0 and ttl is not None and now - r.last_used >= ttl:
                await self._unload(r)
                gone.append(r.runtime.id)
        return gone

    async def run_reaper(self, every_s: float = 1.0) -> None:
        """The idle-unload loop; serve runs it as a task for the server's life."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.unload_idle()
            except Exception:  # an unload that failed must not stop the loop
                log.exception("idle unload failed")

    def residents(self) -> list[Resident]:
        return self._unique()

    def status(self) -> list[dict]:
        """`appliance ps` / `/api/ps`: each loaded model, where it sits, and how busy it is."""
        now = self._clock()
        rows = [self._row(r, now) for r in self._unique()]
        return rows + [{"model": name, "state": "loading"} for name in self._loading]

    def _row(self, r: Resident, now: float) -> dict:
        stats = r.runtime.stats()
        idle = 0.0 if r.leases or stats.slots_busy else now - r.last_used
        ttl = r.keep_alive.seconds if r.keep_alive.seconds is not None else (
            None if r.pinned else self.idle_unload_s
        )
        return {
            "model": r.runtime.id, "state": "loaded", "quant": r.spec.artifact.quant,
            "runtime": r.spec.runtime, "roles": self.registry.roles_of(r.runtime.id),
            "gpu_bytes": r.spec.gpu_bytes, "ram_bytes": r.spec.ram_bytes,
            "n_cpu_moe": r.spec.n_cpu_moe, "n_gpu_layers": r.spec.n_gpu_layers, "context": r.runtime.n_ctx,
            "slots_total": stats.slots_total, "slots_busy": stats.slots_busy,
            "queue_depth": stats.queue_depth, "requests_in_flight": r.leases,
            "idle_s": round(idle, 1), "pinned": r.pinned,
            "unload_in_s": None if ttl is None else max(0.0, round(ttl - idle, 1)),
        }

    def loading(self) -> list[str]:
        return list(self._loading)

    # -- the work -----------------------------------------------------------------------------
    async def _load_one(self, model_id: str) -> Runtime:
        async with self._load_lock:
            spec = await self._make_room(model_id)
            log.info("loading %s on demand", spec.model.name)
            runtime = await asyncio.to_thread(self._load, spec)
            now = self._clock()
            self._residents[runtime.id.lower()] = Resident(spec, runtime, False, now, KEEP)
            if runtime.id.lower() != model_id.lower():  # asked by another of its names
                self._residents[model_id.lower()] = self._residents[runtime.id.lower()]
            self.registry.add(runtime)
            return runtime

    async def _make_room(self, model_id: str) -> LoadSpec:
        """Plan the model beside the residents; unload LRU idle unpinned ones until it fits."""
        while True:
            held = [r.spec for r in self._unique()]
            try:
                spec = self._plan_one(model_id, held)
                full = self.max_loaded and len(held) >= self.max_loaded
                if not full:
                    return spec
                reason = f"{len(held)} models are loaded (max_loaded_models {self.max_loaded})"
            except ServeError as e:
                reason = str(e)
            victim = self._lru_idle()
            if victim is None:
                raise NoRoom(f"{model_id} cannot be loaded now: {reason}; no idle model can be unloaded")
            log.info("unloading %s to make room for %s", victim.runtime.id, model_id)
            await self._unload(victim)

    def _lru_idle(self) -> Resident | None:
        idle = [r for r in self._unique() if r.leases == 0 and not r.pinned]
        return min(idle, key=lambda r: r.last_used, default=None)

    def _unique(self) -> list[Resident]:
        seen: dict[int, Resident] = {id(r): r for r in self._residents.values()}
        return list(seen.values())

    async def _unload(self, resident: Resident) -> None:
        self._residents = {k: r for k, r in self._residents.items() if r is not resident}
        self.registry.remove(resident.runtime.id)
        await resident.runtime.close()
        log.info("unloaded %s", resident.runtime.id)


def room_left(hw: Hardware, held: list[LoadSpec]) -> Hardware:
    """The machine as a new model sees it: what serve found, minus what each resident's plan
    holds (GPU bytes from the GPUs with the most free memory first, RAM bytes from RAM)."""
    ram = max(0, hw.ram_available_bytes - sum(s.ram_bytes for s in held))
    gpus = [g.model_copy() for g in hw.gpus]
    for spec in held:
        need = spec.gpu_bytes
        for g in sorted(gpus, key=lambda g: g.free_bytes, reverse=True):
            take = min(need, g.free_bytes)
            g.free_bytes -= take
            need -= take
    return hw.model_copy(update={"ram_available_bytes": ram, "gpus": gpus})
