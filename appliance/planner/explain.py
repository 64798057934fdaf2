"""The plan in words: why each choice won, what a download would buy, the notes on the speed model
and the machine, and how each runtime would be launched. Text only; the choosing is done."""

from __future__ import annotations

from appliance.hardware.types import Hardware
from appliance.planner.needs import GOOD_TOKS, MAIN_GOOD_CTX, SMALL_ENOUGH_QUALITY, TYPICAL_CTX
from appliance.planner.rank import rank_key
from appliance.planner.speed import CPU_EFFICIENCY, GPU_EFFICIENCY
from appliance.planner.types import Budget, Candidate, HardwareSummary, Role, Suggestion
from appliance.units import gib, kilo
from quantization.catalog import Catalog
from runtimes.vllm.flags import FlagsError, GpuMemory, gpu_memory_utilization


def main_reason(c: Candidate, budget: Budget) -> str:
    """Why the main model won: its tier and quality, runtime, quant, KV type and speed."""
    if c.tier == 2:
        pick = (
            f"highest quality ({c.quality:g}) among obtainable candidates reaching >= "
            f"{kilo(MAIN_GOOD_CTX)} context at >= {GOOD_TOKS['main']:g} tok/s"
        )
    else:
        pick = (
            f"no obtainable candidate reaches {kilo(MAIN_GOOD_CTX)} context at {GOOD_TOKS['main']:g} tok/s; "
            f"the best of what fits (quality {c.quality:g})"
        )
    parts = [f"{c.display_name} {c.quant}: {pick}", _runtime_reason(c, budget)]
    if c._option is not None and len(c._option.model.artifacts) > 1:
        parts.append(f"{c.quant} is the smallest quant of the best precision class that fits ({c.precision})")
    if c.kv_type in ("q8_0", "fp8"):
        parts.append(f"an 8-bit KV cache ({c.kv_type}) buys the context")
    parts.append(f"~{c.tok_s:.0f} tok/s decode, {kilo(c.n_ctx)} context shared by {c.slots} slots")
    return "; ".join(parts) + "."


def _runtime_reason(c: Candidate, budget: Budget) -> str:
    if c.runtime == "vllm":
        tp = f" with tensor parallel {c.tensor_parallel}" if c.tensor_parallel > 1 else ""
        return (
            f"vLLM: the {c.format.upper()} checkpoint fits the GPU (cc {budget.compute_capability:.1f})"
            f"{tp} at {kilo(c.n_ctx)} context"
        )
    if c.placement == "gpu+ram" and c.offloadable_layers:
        in_ram = c.offloadable_layers - max(c.n_gpu_layers, 1)
        return (
            f"llama.cpp, {c.n_gpu_layers} of its {c.offloadable_layers} layers on the GPU (the output layer "
            f"and the last blocks), the first {in_ram} blocks in system RAM: the whole model does not fit "
            f"the GPU at a usable context, and this is as much of it as does"
        )
    if c.placement == "gpu+ram":
        return (
            f"llama.cpp, the routed experts of {c.n_cpu_moe} of its {c.moe_layers} layers in system RAM: "
            f"the GPU alone cannot hold it at a usable context, and the rest of the VRAM keeps "
            f"{c.moe_layers - c.n_cpu_moe} layers' experts"
        )
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


def small_reason(c: Candidate, main: Candidate | None) -> str:
    """Why the side-task model won and where it sits beside main."""
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
        f"summaries, {kilo(c.n_ctx)} context."
    )


def suggest(role: Role, ranked: list[Candidate], chosen: Candidate | None, limit: int) -> list[Suggestion]:
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


def notes(
    hw: Hardware, budget: Budget, catalog: Catalog, main: Candidate | None, small: Candidate | None
) -> list[str]:
    """The speed model's basis, the launch lines, and what the user should know about this machine."""
    out = [
        f"decode tok/s = bandwidth x {GPU_EFFICIENCY} (GPU) or x {CPU_EFFICIENCY} (CPU) / bytes read per "
        f"token (active weights + KV at {kilo(TYPICAL_CTX['main'])}, {kilo(TYPICAL_CTX['small'])} for side "
        f"tasks); CPU prefill assumes {budget.cpu_flops / 1e9:.0f} GFLOP/s"
    ]
    if main is not None:
        out.append(launch_line(main, hw, reserve_bytes=small.memory.gpu_bytes if small else 0))
    if small is not None:
        out.append(launch_line(small, hw))
    out += _machine_notes(hw, budget, catalog)
    if main is None:
        out.append("nothing that can be obtained here fits: see the suggested downloads")
    elif small is None:
        out.append("no side-task model fits beside main: titles and summaries share main's slots")
    elif small.placement == "cpu" and main.placement != "gpu":
        out.append(
            "the small model shares the CPU and its RAM bandwidth with main: side tasks slow main while "
            "they run"
        )
    return out


def _machine_notes(hw: Hardware, budget: Budget, catalog: Catalog) -> list[str]:
    """What this machine's build and memory mean for the plan, whatever was chosen."""
    out = []
    if hw.gpus and hw.llama_gpu_offload is False:
        out.append(
            "WARNING: the installed llama.cpp cannot offload to the GPU: llama.cpp candidates would run on "
            "the CPU at a fraction of these speeds; rebuild llama-cpp-python with CMAKE_ARGS="
            + ("-DGGML_METAL=on" if hw.is_apple else "-DGGML_CUDA=on")
        )
    if not budget.vllm_tp and any(a.format != "gguf" for m in catalog for a in m.artifacts):
        out.append(
            "AWQ/FP8 checkpoints need vLLM on an NVIDIA GPU: only GGUF on llama.cpp is considered here"
        )
    if budget.unified and hw.ram_available_bytes < budget.gpu_bytes:
        out.append(
            f"macOS reports {gib(hw.ram_available_bytes)} available now, less than the Metal budget: "
            "loading this plan makes macOS compress or page out other apps"
        )
    return out


def launch_line(c: Candidate, hw: Hardware, reserve_bytes: int = 0) -> str:
    """How the runtime would be started for this candidate; `reserve_bytes`: what the rest of the
    plan loads on the GPU after it (vLLM leaves that free)."""
    if c.runtime == "vllm":
        return (
            f"{c.role}: vLLM --max-model-len {c.n_ctx} --max-num-seqs {c.slots} --gpu-memory-utilization "
            f"{vllm_utilization(c, hw, reserve_bytes)}"
            + (f" --tensor-parallel-size {c.tensor_parallel}" if c.tensor_parallel > 1 else "")
            + (" --kv-cache-dtype fp8" if c.kv_type == "fp8" else "")
        )
    where = {
        "gpu": "all layers on the GPU",
        "gpu+ram": f"experts of the first {c.n_cpu_moe} of {c.moe_layers} layers in RAM "
        f"(--n-cpu-moe {c.n_cpu_moe})",
        "cpu": "CPU only",
    }
    if c.placement == "gpu+ram" and c.offloadable_layers:
        where["gpu+ram"] = (
            f"{c.n_gpu_layers} of {c.offloadable_layers} layers on the GPU, the first blocks in RAM "
            f"(-ngl {c.n_gpu_layers})"
        )
    return (
        f"{c.role}: llama.cpp n_ctx {c.n_ctx}, {c.slots} slot{'s' if c.slots > 1 else ''} sharing the "
        f"cells, KV {c.kv_type}, flash attention, {where[c.placement]}"
    )


def vllm_utilization(c: Candidate, hw: Hardware, reserve_bytes: int = 0) -> str:
    """--gpu-memory-utilization as `appliance serve` passes it (runtimes.vllm.flags decides, from
    the GPUs' free memory), so the plan prints the value serve will use."""
    nvidia = [g for g in hw.gpus if g.vendor == "nvidia"][: c.tensor_parallel]
    gpus = [GpuMemory(g.total_bytes, g.free_bytes) for g in nvidia]
    try:
        return f"{gpu_memory_utilization(gpus, reserve_bytes):.2f}"
    except FlagsError as e:
        return f"(none: {e})"


def summary(hw: Hardware) -> HardwareSummary:
    """The machine as the plan's header shows it."""
    gpus = [
        f"{g.name}: {gib(g.free_bytes)} free of {gib(g.total_bytes)}"
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
