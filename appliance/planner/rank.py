"""Ranking: fit every catalog model for a role and order the candidates best first. The order is
the planner's policy in one key (`rank_key`), so choosing, suggesting and pairing all agree."""

from __future__ import annotations

from collections.abc import Iterable

from appliance.planner.budget import Room
from appliance.planner.fit import fit, place_experts
from appliance.planner.layers import place_layers
from appliance.planner.needs import SMALL_ENOUGH_QUALITY
from appliance.planner.options import experts_in_ram, is_small, layers_in_ram, options
from appliance.planner.types import PRECISION, Available, Budget, Candidate, Rejection, Role
from quantization.catalog import Catalog


def rank_key(c: Candidate) -> tuple:
    """Main: usable first, then a sane quant, model quality, vLLM on NVIDIA, precision class; inside
    a class the smaller file (faster, more room), then speed. Small: usable, then quality up to
    "good enough", then the smallest weights + KV, then speed (so the GPU beats the CPU)."""
    p = PRECISION.index(c.precision)
    if c.role == "small":
        footprint = c.memory.weights_bytes + c.memory.kv_bytes
        return (c.tier, p > 0, min(c.quality, SMALL_ENOUGH_QUALITY), -footprint, c.tok_s)
    return (c.tier, p > 0, c.quality, c.runtime == "vllm", p, -c.memory.weights_bytes, c.tok_s)


def rank_role(
    role: Role,
    catalog: Catalog,
    budget: Budget,
    room: Room,
    available: Available,
    main: Candidate | None = None,
) -> tuple[list[Candidate], list[Rejection]]:
    """Fit every catalog model for `role` into `room`; best first."""
    main_spec = catalog.get(main.model) if main else None
    found: list[Candidate] = []
    rejected: list[Rejection] = []
    for model in catalog:
        if role == "small" and not is_small(model, main, main_spec):
            continue
        opts, why = options(model, role, budget, main)
        got = [fit(o, role, room, budget, available) for o in opts]
        if role == "main":
            split = [place_experts(o, role, room, budget) for o in experts_in_ram(model, budget, got)]
            split += [place_layers(o, role, room, budget) for o in layers_in_ram(model, budget, got)]
            got += [fit(o, role, room, budget, available) for o in split]
        found += [g for g in got if isinstance(g, Candidate)]
        rejected += why + [g for g in got if isinstance(g, Rejection)]
    found.sort(key=rank_key, reverse=True)
    return found, rejected


def first_available(ranked: Iterable[Candidate]) -> Candidate | None:
    """The best candidate that can be obtained here."""
    return next((c for c in ranked if c.available), None)
