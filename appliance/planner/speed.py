"""The speed model: decode tok/s = bandwidth x efficiency / bytes read per token, and CPU prefill
from FLOP/s. Kept apart so its calibration (the constants below) can be checked on its own."""

from __future__ import annotations

from appliance.planner.budget import DEFAULT_GPU_GBPS
from appliance.planner.memory import kv_size_type
from appliance.planner.needs import TYPICAL_CTX
from appliance.planner.types import Budget, Option, Role
from appliance.units import gb
from quantization.estimator import block_bytes, kv_cache_bytes, layer_split, output_bytes

GPU_EFFICIENCY = 0.55  # share of spec bandwidth llama.cpp / vLLM decode reaches
CPU_EFFICIENCY = 0.45
CPU_TOKEN_OVERHEAD_S = 0.003  # per-token fixed cost on CPU (sampling, sync); dominates tiny models
GPU_TOKEN_OVERHEAD_S = 0.001  # kernel launches and the host round trip per token
TP_EFFICIENCY = 0.85  # vLLM tensor parallel: bandwidth adds, less the all-reduces


def decode_speed(opt: Option, kv: str, n_ctx: int, budget: Budget, role: Role = "main") -> tuple[float, str]:
    """Decode is memory-bound: every token reads the active weights and the KV written so far."""
    m = opt.model
    per_param = opt.artifact.size_bytes / m.params_total
    kv_read = kv_cache_bytes(m.arch, min(n_ctx, TYPICAL_CTX[role]), kv_size_type(kv))
    cpu_bw = budget.cpu_gbps * 1e9 * CPU_EFFICIENCY
    cpu_basis = f"RAM at {budget.cpu_gbps:.0f} GB/s x {CPU_EFFICIENCY}"
    if opt.placement == "cpu":
        read = m.params_active * per_param + kv_read
        t = read / cpu_bw + CPU_TOKEN_OVERHEAD_S
        return 1 / t, f"{gb(read)} per token from {cpu_basis} + {CPU_TOKEN_OVERHEAD_S * 1e3:g} ms"
    gpu_gbps = (budget.gpu_gbps or DEFAULT_GPU_GBPS) * (opt.tp * TP_EFFICIENCY if opt.tp > 1 else 1)
    gpu_bw = gpu_gbps * 1e9 * GPU_EFFICIENCY
    gpu_basis = f"VRAM at {gpu_gbps:.0f} GB/s x {GPU_EFFICIENCY} + {GPU_TOKEN_OVERHEAD_S * 1e3:g} ms"
    if opt.splits_layers:
        return _layer_split_speed(opt, kv_read, gpu_bw, cpu_bw, gpu_basis, cpu_basis)
    if opt.placement == "gpu+ram":
        # the active experts of the first n_cpu_moe layers are read from RAM, the rest from VRAM
        experts = m.params_experts * (m.arch.n_experts_used or 0) / (m.arch.n_experts or 1) * per_param
        in_ram = experts * min(opt.n_cpu_moe, m.arch.n_layers) / m.arch.n_layers
        on_gpu = m.params_active * per_param - in_ram + kv_read
        t = on_gpu / gpu_bw + in_ram / cpu_bw + GPU_TOKEN_OVERHEAD_S
        return 1 / t, (
            f"{gb(on_gpu)} per token from {gpu_basis}; {gb(in_ram)} of experts ({opt.n_cpu_moe} of "
            f"{m.arch.n_layers} layers) from {cpu_basis}"
        )
    read = m.params_active * per_param + kv_read
    return 1 / (read / gpu_bw + GPU_TOKEN_OVERHEAD_S), f"{gb(read)} per token from {gpu_basis}"


def prefill_speed(opt: Option, budget: Budget) -> float | None:
    """CPU prompt processing is compute-bound: 2 FLOP per active parameter per token."""
    if opt.placement != "cpu":
        return None
    return round(budget.cpu_flops / (2 * opt.model.params_active), 1)


def _layer_split_speed(
    opt: Option, kv_read: float, gpu_bw: float, cpu_bw: float, gpu_basis: str, cpu_basis: str
) -> tuple[float, str]:
    """A dense model split by layers (-ngl): each token reads the GPU's blocks, the output layer
    (it takes the first GPU slot) and their KV from VRAM, the first blocks and theirs from RAM, one
    after the other. The total read is the all-GPU forecast's (the input table counted on the GPU
    side as there), so the split always lands between the all-GPU and all-CPU forecasts."""
    m = opt.model
    total = m.params_active * opt.artifact.size_bytes / m.params_total + kv_read
    _, ram_blocks, out_on_gpu = layer_split(m, opt.artifact, opt.n_gpu_layers)
    in_ram = ram_blocks * (block_bytes(m, opt.artifact) + kv_read / m.arch.n_layers)
    in_ram += 0 if out_on_gpu else output_bytes(m, opt.artifact)
    on_gpu = total - in_ram
    t = on_gpu / gpu_bw + in_ram / cpu_bw + GPU_TOKEN_OVERHEAD_S
    return 1 / t, (
        f"{gb(on_gpu)} per token from {gpu_basis}; {gb(in_ram)} ({ram_blocks} of {m.arch.n_layers} blocks "
        f"and their KV) from {cpu_basis}"
    )
