"""Plan assembly: rank main, fit the small side-task model beside it (trading main's surplus
context for a better small model when that helps), and put the pair, the alternatives and the
explanations together into one `Plan`. This is the planner's entry point, `plan`."""

from __future__ import annotations

from appliance.hardware.types import Hardware
from appliance.planner.budget import Room, memory_budget
from appliance.planner.explain import main_reason, notes, small_reason, suggest, summary
from appliance.planner.fit import fit, place_experts, release_experts
from appliance.planner.layers import place_layers, release_layers
from appliance.planner.needs import MAIN_GOOD_CTX, MAIN_POOR_CTX
from appliance.planner.rank import first_available, rank_key, rank_role
from appliance.planner.types import Available, Budget, Candidate, Plan, Rejection
from quantization.catalog import Artifact, Catalog, ModelSpec, load_catalog


def obtainable(model: ModelSpec, artifact: Artifact) -> bool:
    """In the store already, or fetchable with no model hub (a PyPI wheel or mirror)."""
    from appliance.models.store import installed

    return artifact.obtainable_offline or installed(model, artifact) is not None


def pullable(model: ModelSpec, artifact: Artifact) -> bool:
    """What `serve` can get by itself: the above, or a download from the model hub."""
    return obtainable(model, artifact) or bool(artifact.repo)


def assume_downloadable(model: ModelSpec, artifact: Artifact) -> bool:
    """Availability for simulated machines: anything in the catalog can be downloaded."""
    return True


def plan(hw: Hardware, available: Available | None = None, catalog: Catalog | None = None) -> Plan:
    """Rank what fits `hw` for the main and small roles and pick the best obtainable pair.

    catalog: by default the catalog plus this machine's imported models, or the catalog alone
    when `available` is given (another machine, e.g. a profile: our imports are not there)."""
    if catalog is None:
        from appliance.models.inventory import known_models

        catalog = load_catalog() if available else known_models()
    available = available or obtainable
    budget = memory_budget(hw)
    room = Room.of(budget)
    mains, rejected = rank_role("main", catalog, budget, room, available)
    main = first_available(mains)
    main, smalls, small, small_rejected = _pair(main, catalog, budget, room, available)
    if main is not None:
        mains = sorted([main, *(c for c in mains if not _same(c, main))], key=rank_key, reverse=True)
        main.reason = main_reason(main, budget)
    if small is not None:
        small.reason = small_reason(small, main)
    left = room.minus(main).minus(small)
    for c in (main, small):
        if c is not None:
            _final_headroom(c, left)
    return Plan(
        hardware=summary(hw),
        budget=budget,
        main=main,
        small=small,
        headroom_gpu_bytes=left.gpu,
        headroom_ram_bytes=left.ram,
        candidates={"main": mains, "small": smalls},
        rejected=rejected + small_rejected,
        suggested=suggest("main", mains, main, 3) + suggest("small", smalls, small, 2),
        notes=notes(hw, budget, catalog, main, small),
    )


def _same(a: Candidate, b: Candidate) -> bool:
    return (a.model, a.quant, a.runtime, a.placement) == (b.model, b.quant, b.runtime, b.placement)


def _pair(
    main: Candidate | None, catalog: Catalog, budget: Budget, room: Room, available: Available
) -> tuple[Candidate | None, list[Candidate], Candidate | None, list[Rejection]]:
    """Fit the small model beside main. If no usable one fits, let main give back the context above
    its tier's floor (32k or 16k), and a split model the VRAM that RAM can take over (experts, or
    whole layers of a dense one); if that admits a better small model, place it and regrow main
    (as much of it on the GPU as fits beside it)."""
    smalls, rejected = rank_role("small", catalog, budget, room.minus(main), available, main)
    small = first_available(smalls)
    if main is None or main._option is None or (small is not None and small.tier == 2):
        return main, smalls, small, rejected
    released = release_layers(release_experts(main._option, room), room)
    shrunk = fit(released, "main", room, budget, available, cap=_ctx_floor(main))
    if not isinstance(shrunk, Candidate) or (
        shrunk.n_ctx >= main.n_ctx and shrunk.memory.gpu_bytes >= main.memory.gpu_bytes
    ):
        return main, smalls, small, rejected
    trial, _ = rank_role("small", catalog, budget, room.minus(shrunk), available, main)
    better = first_available(trial)
    if better is None or (small is not None and rank_key(better) <= rank_key(small)):
        return main, smalls, small, rejected
    beside = room.minus(better)
    placed = place_layers(place_experts(main._option, "main", beside, budget), "main", beside, budget)
    grown = fit(placed, "main", beside, budget, available)
    assert isinstance(grown, Candidate)  # it fit at the floor beside `better`
    smalls, rejected = rank_role("small", catalog, budget, room.minus(grown), available, grown)
    return grown, smalls, first_available(smalls), rejected


def _final_headroom(c: Candidate, others: Room) -> None:
    """Headroom of a chosen candidate once the other chosen one is placed too."""
    if c._option is None:
        return
    gpu_left = others.vllm_gpu if c.runtime == "vllm" else others.gpu
    c.memory = c.memory.model_copy(update={"headroom_gpu_bytes": gpu_left, "headroom_ram_bytes": others.ram})


def _ctx_floor(main: Candidate | None) -> int:
    if main is None:
        return 0
    for floor in (MAIN_GOOD_CTX, MAIN_POOR_CTX):
        if main.n_ctx >= floor:
            return floor
    return main.n_ctx
