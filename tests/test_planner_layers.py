"""A dense model split by layers between VRAM and RAM (issue 14, llama.cpp's -ngl): judged by the
planner's rule rather than by numbers. k (the -ngl value) is the most layers that leave the GPU room
for the wanted context (k + 1 would not), the speed forecast sits between the all-GPU and all-CPU
ones, and a model that fits whole keeps -1 (all layers) with no split offered at all.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from rich.console import Console

from appliance.hardware.types import Hardware
from appliance.planner import Candidate, Plan, assume_downloadable, plan
from appliance.planner.budget import Room
from appliance.planner.memory import memory_of, usage
from appliance.planner.needs import MAIN_GOOD_CTX
from appliance.planner.report import print_plan
from appliance.planner.speed import decode_speed
from appliance.profiles import load_profile
from appliance.units import GiB
from quantization.catalog import Catalog, load_catalog

SPLIT_MACHINES = ["rtx-4060", "rtx-4080", "6gb"]  # cards too small for some dense agent models
WHOLE_MACHINES = ["rtx-3090", "rtx-4090", "a100-80gb", "h100-80gb", "2x-rtx-3090"]


def _six_gb_card() -> Hardware:
    """The rtx-4060 box with a 6 GB card (RTX 2060 / 3050 class): 5.5 GiB free."""
    hw = load_profile("rtx-4060")
    update = {"name": "6 GB card", "total_bytes": 6 * GiB, "free_bytes": int(5.5 * GiB)}
    gpu = hw.gpus[0].model_copy(update=update)
    return hw.model_copy(update={"name": "6gb-card", "gpus": [gpu]})


def _hw(machine: str) -> Hardware:
    return _six_gb_card() if machine == "6gb" else load_profile(machine)


def _plan(machine: str, catalog: Catalog | None = None) -> Plan:
    return plan(_hw(machine), available=assume_downloadable, catalog=catalog)


def _layer_splits(p: Plan) -> list[tuple[Candidate, Room]]:
    """Every dense split with the room it was placed in (the chosen main: beside the small model)."""
    room = Room.of(p.budget)
    out = [(c, room) for c in p.candidates["main"] if c.offloadable_layers and c is not p.main]
    if p.main is not None and p.main.offloadable_layers:
        out.append((p.main, room.minus(p.small)))
    return out


def _gpu_fits(c: Candidate, room: Room, k: int) -> bool:
    """Whether the candidate's model with -ngl k fits `room`'s GPU at the wanted context, f16 KV."""
    assert c._option is not None
    opt = replace(c._option, n_gpu_layers=k)
    wanted = min(MAIN_GOOD_CTX, opt.model.context_native)
    return room.fits(usage(opt, memory_of(opt, wanted, "f16", c.slots))[0], 0, opt.runtime)


@pytest.mark.parametrize("machine", SPLIT_MACHINES)
def test_split_keeps_the_most_layers_on_the_gpu(machine: str) -> None:
    p = _plan(machine)
    splits = _layer_splits(p)
    assert splits, f"{machine}: no dense model is split, the case this test is about"
    for c, room in splits:
        k, slots = c.n_gpu_layers, c.offloadable_layers
        assert slots == c._option.model.arch.n_layers + 1 and 0 <= k < slots, c
        assert _gpu_fits(c, room, k), f"{c.model} {c.quant}: -ngl {k} does not fit"
        assert not _gpu_fits(c, room, k + 1), f"{c.model} {c.quant}: -ngl {k + 1} would fit too"
        assert c.memory.weights_cpu_bytes > 0 and c.memory.kv_cpu_bytes > 0
        assert c.memory.headroom_gpu_bytes >= 0 and c.memory.headroom_ram_bytes >= 0


@pytest.mark.parametrize("machine", SPLIT_MACHINES)
def test_a_dense_model_that_fits_whole_is_not_split(machine: str) -> None:
    """A dense model with any plan on the GPU alone at a usable context gets no split: whole
    blocks read from RAM cost more than a smaller quant or context does."""
    p = _plan(machine)
    usable = {c.model for c in p.candidates["main"] if c.placement == "gpu" and c.n_ctx >= MAIN_GOOD_CTX}
    assert usable
    for c in p.candidates["main"]:
        if c.placement == "gpu":
            assert c.n_gpu_layers == -1 and c.offloadable_layers == 0 and c.memory.kv_cpu_bytes == 0
    assert not [c for c, _ in _layer_splits(p) if c.model in usable]


@pytest.mark.parametrize("machine", WHOLE_MACHINES)
def test_cards_that_hold_the_agent_models_split_nothing(machine: str) -> None:
    p = _plan(machine)
    assert not _layer_splits(p)
    assert all(c.n_gpu_layers == -1 for c in p.candidates["main"] + p.candidates["small"])


def test_speed_forecast_lies_between_all_gpu_and_all_cpu() -> None:
    """Bandwidth-bound: each block moved to RAM is read at the CPU's rate instead of the GPU's, so
    the forecast rises with k, from (nearly) all in RAM to all on the GPU, and stays between them."""
    p = _plan("rtx-4080")
    c = next(c for c in p.candidates["main"] if c.offloadable_layers)
    opt = c._option
    assert opt is not None
    slots = opt.model.arch.n_layers + 1
    speeds = [decode_speed(replace(opt, n_gpu_layers=k), "f16", 32768, p.budget)[0] for k in range(slots)]
    assert all(a < b for a, b in itertools.pairwise(speeds))
    whole = decode_speed(replace(opt, placement="gpu", n_gpu_layers=-1), "f16", 32768, p.budget)[0]
    on_cpu = replace(opt, placement="cpu", backend="cpu", n_gpu_layers=-1)
    cpu = decode_speed(on_cpu, "f16", 32768, p.budget)[0]
    assert cpu < speeds[0] and speeds[-1] < whole
    assert cpu < c.tok_s < whole
    blocks = opt.model.arch.n_layers - (opt.n_gpu_layers - 1)
    assert f"({blocks} of {opt.model.arch.n_layers} blocks and their KV) from RAM" in c.tok_s_basis


def test_a_bigger_card_keeps_more_layers_on_the_gpu() -> None:
    def k_for(machine: str, model: str, quant: str) -> int:
        p = _plan(machine)
        return next(c.n_gpu_layers for c in p.candidates["main"] if (c.model, c.quant) == (model, quant))

    k6, k8, k16 = (k_for(m, "gemma-3-27b-it", "Q4_K_M") for m in ("6gb", "rtx-4060", "rtx-4080"))
    assert 0 < k6 < k8 < k16 < 63


def test_a_smaller_quant_that_fits_whole_outranks_a_split_of_a_bigger_one() -> None:
    """Devstral on a 16 GB card: Q3_K_M fits whole at 32k+, so no quant of it is split; the MoE
    split above it stays the choice, and the plan the profile had is unchanged."""
    p = _plan("rtx-4080")
    devstral = [c for c in p.candidates["main"] if c.model == "devstral-small-24b"]
    assert devstral and all(c.placement == "gpu" for c in devstral)
    assert p.main is not None and p.main.model == "qwen3-coder-30b-a3b-instruct"
    assert p.main.placement == "gpu+ram"
    assert p.main.moe_layers and p.main.n_gpu_layers == -1


def test_plan_shows_the_layer_split_and_the_ngl_flag() -> None:
    """With only Devstral to choose from, an 8 GB card serves it split: the table, the breakdown,
    the warning and the launch line all say how many layers sit on the GPU."""
    devstral = load_catalog().get("devstral-small-24b")
    assert devstral is not None
    p = _plan("rtx-4060", Catalog([devstral]))
    main = p.main
    assert main is not None and main.placement == "gpu+ram" and main.offloadable_layers == 41
    k = main.n_gpu_layers
    assert 0 < k < 41 and main.tier >= 1
    console = Console(width=200, record=True)
    print_plan(p, console)
    text = console.export_text()
    assert f"llama.cpp -ngl {k}/41" in text
    assert f"{k} of 41 layers on the GPU" in text
    assert any(f"(-ngl {k})" in note for note in p.notes)
    data = p.model_dump()["main"]
    assert data["n_gpu_layers"] == k and data["memory"]["weights_cpu_bytes"] > 0
