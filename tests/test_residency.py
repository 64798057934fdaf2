"""The residency policy (appliance/serve/residency.py) on scripted runtimes: what is loaded,
what is unloaded for room or idleness, and what never is. No model: the loads are instant
stand-ins, so each rule is checked exactly; tests/test_on_demand.py runs real models."""

from __future__ import annotations

import asyncio

import pytest
from fakes.scripted_runtime import ScriptedRuntime

from appliance.api.keep_alive import BadKeepAlive, KeepAlive, parse_keep_alive
from appliance.api.registry import ModelNotFound, ModelRegistry
from appliance.hardware.types import CPU, GPU, Hardware
from appliance.serve.choice import LoadSpec, ServeError
from appliance.serve.residency import Busy, LoadTimeout, NoRoom, Residency, room_left
from quantization.catalog import load_catalog

GB = 10**9


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def spec(name: str, ram_gb: float) -> LoadSpec:
    model = load_catalog().get("smollm2-135m-instruct").model_copy(update={"name": name})
    return LoadSpec("main", model, model.artifacts[0], 2048, 1, "f16", "test", ram_bytes=int(ram_gb * GB))


class World:
    """A machine with `ram_gb` for models, and models of the given sizes."""

    def __init__(self, ram_gb: float, sizes: dict[str, float], load_s: float = 0.0, **kw):
        self.sizes, self.ram, self.load_s = sizes, ram_gb * GB, load_s
        self.loads: list[str] = []
        self.clock = Clock()
        self.registry = ModelRegistry()
        self.res = Residency(self.registry, self.plan_one, self.load, clock=self.clock, **kw)

    def plan_one(self, name: str, held: list[LoadSpec]) -> LoadSpec:
        if name not in self.sizes:
            raise ServeError(f"unknown model {name!r}")
        want = spec(name, self.sizes[name])
        if sum(s.ram_bytes for s in held) + want.ram_bytes > self.ram:
            raise ServeError(f"{name} does not fit")
        return want

    def load(self, s: LoadSpec) -> ScriptedRuntime:
        import time

        time.sleep(self.load_s)  # a worker thread, as a real load
        self.loads.append(s.model.name)
        return ScriptedRuntime(id=s.model.name)

    def start_with(self, name: str) -> None:
        rt = ScriptedRuntime(id=name)
        self.registry.add(rt, roles=["main"])
        self.res.adopt(spec(name, self.sizes[name]), rt)

    def loaded(self) -> list[str]:
        return sorted({r.runtime.id for r in self.res.residents()})


def run(coro):
    return asyncio.run(coro)


def test_a_named_model_loads_on_demand_and_is_served_from_then_on() -> None:
    w = World(10, {"main": 4, "a": 2})
    w.start_with("main")

    async def go():
        rt = await w.res.acquire("a")
        await w.res.release("a")
        assert w.registry.resolve("a") is rt
        assert await w.res.acquire("a") is rt  # no second load
        await w.res.release("a")

    run(go())
    assert w.loads == ["a"] and w.loaded() == ["a", "main"]


def test_lru_idle_model_is_unloaded_for_room_but_never_one_in_flight_or_the_pinned_main() -> None:
    w = World(10, {"main": 4, "a": 3, "b": 3, "c": 3})
    w.start_with("main")

    async def go():
        for name in ("a", "b"):
            await w.res.acquire(name)
            w.clock.t += 10
            await w.res.release(name)
        await w.res.acquire("b")  # b is now the most recently used, and busy
        await w.res.acquire("c")  # needs 3 more: a (idle, oldest) goes
        assert w.loaded() == ["b", "c", "main"]
        with pytest.raises(ModelNotFound):
            w.registry.resolve("a")
        # Nothing idle but pinned main and busy b/c: a fourth load is refused, nothing unloaded.
        with pytest.raises(NoRoom, match="no idle model can be unloaded"):
            await w.res.acquire("a")
        assert w.loaded() == ["b", "c", "main"]

    run(go())


def test_max_loaded_models_counts_like_memory() -> None:
    w = World(100, {"main": 1, "a": 1, "b": 1}, max_loaded=2)
    w.start_with("main")

    async def go():
        await w.res.acquire("a")
        await w.res.release("a")
        await w.res.acquire("b")
        await w.res.release("b")

    run(go())
    assert w.loaded() == ["b", "main"]


def test_keep_alive_zero_unloads_when_the_last_request_ends() -> None:
    w = World(10, {"main": 1, "a": 1})
    w.start_with("main")
    unloaded_runtime: list[ScriptedRuntime] = []

    async def go():
        rt = await w.res.acquire("a", KeepAlive(0))
        second = await w.res.acquire("a")  # another request in flight keeps it
        assert second is rt
        await w.res.release("a")
        assert w.loaded() == ["a", "main"]
        await w.res.release("a")
        unloaded_runtime.append(rt)

    run(go())
    assert w.loaded() == ["main"] and unloaded_runtime[0].closed_runtime


def test_idle_unload_after_keep_alive_or_idle_unload_s_but_not_the_pinned_main() -> None:
    w = World(10, {"main": 1, "a": 1, "b": 1}, idle_unload_s=60)
    w.start_with("main")

    async def go():
        await w.res.acquire("a", KeepAlive(5))
        await w.res.release("a")
        await w.res.acquire("b")  # the configured idle_unload_s
        await w.res.release("b")
        w.clock.t += 6
        assert await w.res.unload_idle() == ["a"]
        w.clock.t += 60
        assert await w.res.unload_idle() == ["b"]
        w.clock.t += 10_000
        assert await w.res.unload_idle() == []  # main stays

    run(go())
    assert w.loaded() == ["main"]


def test_a_request_for_a_loading_model_waits_for_the_one_load_and_a_bounded_wait_times_out() -> None:
    w = World(10, {"main": 1, "slow": 1}, load_s=0.3)
    w.start_with("main")

    async def go():
        a, b = await asyncio.gather(w.res.acquire("slow"), w.res.acquire("slow"))
        assert a is b

    run(go())
    assert w.loads == ["slow"]  # both waited for one load

    impatient = World(10, {"main": 1, "slow": 1}, load_s=0.5, load_wait_s=0.05)
    with pytest.raises(LoadTimeout, match="still loading"):
        run(impatient.res.acquire("slow"))


def test_unload_is_refused_while_in_flight() -> None:
    w = World(10, {"main": 1, "a": 1})

    async def go():
        await w.res.acquire("a")
        with pytest.raises(Busy):
            await w.res.unload("a")
        await w.res.release("a")
        await w.res.unload("a")

    run(go())
    assert w.loaded() == []


def test_room_left_takes_resident_bytes_from_ram_and_the_freest_gpu() -> None:
    cpu = CPU(model="x", physical_cores=8, logical_cores=16, arch="x86_64")
    gpus = [
        GPU(index=i, vendor="nvidia", name="g", total_bytes=24 * GB, free_bytes=f * GB)
        for i, f in ((0, 20), (1, 22))
    ]
    hw = Hardware(
        name="h",
        source="profile:t",
        os="linux",
        cpu=cpu,
        ram_total_bytes=64 * GB,
        ram_available_bytes=60 * GB,
        gpus=gpus,
    )
    held = [spec("a", 5)]
    held[0].gpu_bytes = 24 * GB
    left = room_left(hw, held)
    assert left.ram_available_bytes == 55 * GB
    assert sorted(g.free_bytes for g in left.gpus) == [0, 18 * GB]  # 22 first, then 2 of the 20
    assert hw.gpus[0].free_bytes == 20 * GB  # the machine itself is not changed


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        ("0", 0.0),
        (30, 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        (-1, None),
        ("-1m", None),
    ],
)
def test_keep_alive_takes_ollamas_forms(value, seconds) -> None:
    assert parse_keep_alive(value) == KeepAlive(seconds)


@pytest.mark.parametrize("value", ["soon", "5 minutes", True, [], "5x"])
def test_keep_alive_refuses_what_it_cannot_read(value) -> None:
    with pytest.raises(BadKeepAlive):
        parse_keep_alive(value)
