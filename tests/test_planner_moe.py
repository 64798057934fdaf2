"""The MoE split between VRAM and RAM (issue 14): how many layers' routed experts the planner puts in
system RAM, judged by its rule rather than by numbers: N is the fewest layers that let the rest fit
the GPU at the wanted context (with N - 1 it would not), and a model that fits whole gets N = 0.
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

CARDS = ["rtx-4060", "rtx-4080", "rtx-3090", "rtx-4090"]


def _six_gb_card() -> Hardware:
    """The rtx-4060 box with a 6 GB card (RTX 2060 / 3050 class): 5.5 GiB free."""
    hw = load_profile("rtx-4060")
    update = {"name": "6 GB card", "total_bytes": 6 * GiB, "free_bytes": int(5.5 * GiB)}
    gpu = hw.gpus[0].model_copy(update=update)
    return hw.model_copy(update={"name": "6gb-card", "gpus": [gpu]})


def _plan(machine: str) -> Plan:
    hw = _six_gb_card() if machine == "6gb" else load_profile(machine)
    return plan(hw, available=assume_downloadable)


def _gpu_fits(c: Candidate, room: Room, n: int) -> bool:
    """Whether the candidate's model, with the experts of `n` layers in RAM, fits `room`'s GPU at
    the wanted context with f16 KV and the candidate's slots."""
    assert c._option is not None
    opt = replace(c._option, placement="gpu+ram", n_cpu_moe=n)
    wanted = min(MAIN_GOOD_CTX, opt.model.context_native)
    gpu, _ = usage(opt, memory_of(opt, wanted, "f16", c.slots))
    return room.fits(gpu, 0, opt.runtime)


def _splits(p: Plan) -> list[tuple[Candidate, Room]]:
    """Every split candidate with the room it was placed in: the ranked ones in the whole budget,
    the chosen main beside the chosen small model."""
    room = Room.of(p.budget)
    split = [c for c in p.candidates["main"] if c.placement == "gpu+ram" and c.moe_layers]
    out = [(c, room) for c in split if c is not p.main]
    if p.main is not None and p.main.placement == "gpu+ram":
        out.append((p.main, room.minus(p.small)))
    return out


@pytest.mark.parametrize("machine", [*CARDS, "6gb"])
def test_split_keeps_the_fewest_expert_layers_in_ram(machine: str) -> None:
    p = _plan(machine)
    for c, room in _splits(p):
        n, layers = c.n_cpu_moe, c.moe_layers
        assert 1 <= n <= layers == c._option.model.arch.n_layers, c
        assert not _gpu_fits(c, room, n - 1), f"{c.model} {c.quant}: N={n} but {n - 1} fits on {machine}"
        if _gpu_fits(c, room, n):
            assert c.n_ctx >= min(MAIN_GOOD_CTX, c._option.model.context_native)
        else:  # even every layer's experts in RAM leave too little: as much context as fits
            assert n == layers
        assert c.memory.weights_cpu_bytes > 0 and c.memory.cpu_bytes == c.memory.weights_cpu_bytes
        assert c.memory.gpu_bytes <= room.gpu and c.memory.cpu_bytes <= room.ram


@pytest.mark.parametrize("machine", [*CARDS, "6gb"])
def test_a_moe_that_fits_whole_keeps_every_expert_on_the_gpu(machine: str) -> None:
    p = _plan(machine)
    moe = [c for c in p.candidates["main"] if c.moe_layers and c.runtime == "llama.cpp"]
    for c in moe:
        if c.placement == "gpu":
            assert c.n_cpu_moe == 0 and c.memory.weights_cpu_bytes == 0
    whole = {c.model for c in moe if c.placement == "gpu" and c.n_ctx >= MAIN_GOOD_CTX}
    assert not [c for c in moe if c.placement == "gpu+ram" and c.model in whole]


def test_small_cards_split_and_big_cards_do_not() -> None:
    """6, 8 and 16 GB cannot hold a 30B-A3B Q4_K_M (17.3 GiB) at 32k: some expert layers go to RAM,
    fewer the bigger the card; 24 GB holds it whole."""
    def n_for(machine: str, model: str = "qwen3-30b-a3b", quant: str = "Q4_K_M") -> int | None:
        hits = [c for c in _plan(machine).candidates["main"] if (c.model, c.quant) == (model, quant)]
        return hits[0].n_cpu_moe if hits else None

    n6, n8, n16, n24 = n_for("6gb"), n_for("rtx-4060"), n_for("rtx-4080"), n_for("rtx-4090")
    assert n24 == 0
    assert n16 is not None and n8 is not None and n6 is not None
    assert 0 < n16 < n8 <= n6 <= 48
    n16_q8 = n_for("rtx-4080", quant="Q8_0")
    assert n16_q8 is not None and n16 < n16_q8 < 48  # bigger experts: more layers to RAM


def test_speed_forecast_reads_ram_layers_at_ram_bandwidth() -> None:
    """Decode is bandwidth-bound: each layer's active experts moved to RAM are read at the CPU's
    rate instead of the GPU's, so the forecast falls with N, from all-on-GPU to all-in-RAM."""
    p = _plan("rtx-4080")
    c = next(c for c in p.candidates["main"] if c.placement == "gpu+ram" and c.moe_layers)
    opt = c._option
    assert opt is not None
    layers = opt.model.arch.n_layers
    speeds = [decode_speed(replace(opt, n_cpu_moe=n), "f16", 32768, p.budget)[0] for n in range(layers + 1)]
    assert all(a > b for a, b in itertools.pairwise(speeds))
    whole = decode_speed(replace(opt, placement="gpu", n_cpu_moe=0), "f16", 32768, p.budget)[0]
    assert speeds[0] == pytest.approx(whole)
    # the time per token grows linearly in N: RAM and VRAM bytes per token add up
    times = [1 / s for s in speeds]
    step = times[1] - times[0]
    assert times[layers] - times[0] == pytest.approx(layers * step, rel=1e-6)
    basis = decode_speed(opt, "f16", 32768, p.budget)[1]
    assert f"({opt.n_cpu_moe} of {layers} layers) from RAM" in basis


def test_plan_shows_the_split_and_serve_gets_it() -> None:
    p = _plan("rtx-4080")
    main = p.main
    assert main is not None and main.placement == "gpu+ram"
    console = Console(width=160, record=True)
    print_plan(p, console)
    text = console.export_text()
    assert f"llama.cpp+RAM {main.n_cpu_moe}/{main.moe_layers}" in text
    assert f"experts of {main.n_cpu_moe} of {main.moe_layers} layers" in text
    assert any(f"--n-cpu-moe {main.n_cpu_moe}" in note for note in p.notes)
    data = main.model_dump()
    assert data["n_cpu_moe"] == main.n_cpu_moe and data["memory"]["weights_cpu_bytes"] > 0
