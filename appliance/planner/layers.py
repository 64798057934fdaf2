"""A dense model too big for the GPU: how many of its layers llama.cpp puts there (-ngl k).

llama.cpp's -ngl counts the n_layers blocks plus the output layer (llama_model_base::load_tensors):
any k >= 1 puts the output layer on the GPU and then the last k - 1 blocks, each with its KV; the
first blocks stay in system RAM, and k = n_layers + 1 is the whole model. Every block on the GPU is
read at VRAM speed instead of RAM speed, so the planner keeps as many there as fit (the MoE
counterpart, which keeps every layer and moves experts, is `fit.place_experts`).
"""

from __future__ import annotations

from dataclasses import replace

from appliance.planner.budget import Room
from appliance.planner.fit import CTX_STEP, _ctx_bounds, _kv_types, _slots
from appliance.planner.memory import memory_of, usage
from appliance.planner.types import Budget, Option, Role


def place_layers(opt: Option, role: Role, room: Room, budget: Budget, cap: int | None = None) -> Option:
    """`opt` with the most layers on the GPU (the largest -ngl) that leave room there for the role's
    wanted context with f16 KV, and never fewer than the RAM room needs (`least_gpu_layers`); the
    plain GPU option when the whole model fits. `fit` then finds the context of what was placed."""
    if not opt.splits_layers:
        return opt
    slots = _slots(role, opt, budget)
    wanted = _ctx_bounds(role, opt.model, cap)[1]
    kv = _kv_types(opt, budget)[0]

    def gpu_fits(k: int) -> bool:
        o = replace(opt, n_gpu_layers=k)
        return room.fits(usage(o, memory_of(o, wanted, kv, slots))[0], 0, opt.runtime)

    every = opt.model.arch.n_layers + 1
    if gpu_fits(every):
        return replace(opt, placement="gpu", n_gpu_layers=-1)
    lo, hi = least_gpu_layers(opt, room), every - 1
    if not gpu_fits(lo):
        return replace(opt, n_gpu_layers=lo)
    while lo < hi:  # gpu_fits(lo); GPU bytes grow with k, so bisect for the largest k that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if gpu_fits(mid) else (lo, mid - 1)
    return replace(opt, n_gpu_layers=lo)


def release_layers(opt: Option, room: Room) -> Option:
    """`opt` with as few layers on the GPU as the RAM room allows: the least VRAM it can take (to make
    room for a side-task model beside it)."""
    if not opt.splits_layers:
        return opt
    return replace(opt, n_gpu_layers=least_gpu_layers(opt, room))


def least_gpu_layers(opt: Option, room: Room) -> int:
    """The fewest layers on the GPU whose RAM side (the other blocks and their KV at the smallest
    context) fits the RAM room; RAM bytes fall as k grows. 0 when RAM holds all but the output."""

    def ram_fits(k: int) -> bool:
        o = replace(opt, n_gpu_layers=k)
        return room.fits(0, usage(o, memory_of(o, CTX_STEP, "f16", 1))[1], opt.runtime)

    lo, hi = 0, opt.model.arch.n_layers  # hi: one block in RAM, at least as small as any fewer
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ram_fits(mid) else (mid + 1, hi)
    return lo
