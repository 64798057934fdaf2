"""The memory budget: how many bytes the plan may fill on each pool (GPU, vLLM's GPUs, system RAM)
and the bandwidth and compute that set speed, derived once from the machine; and `Room`, what is
still free while candidates are placed into that budget."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from appliance.hardware.types import Hardware
from appliance.planner.types import Budget, Candidate
from appliance.units import GiB, MiB, gib
from quantization.formats import Backend, RuntimeKind

RAM_RESERVE_MIN = 2 * GiB  # the OS and the appliance itself
RAM_RESERVE_FRACTION = 0.10
EXTRA_GPU_OVERHEAD = 512 * MiB  # llama.cpp: each extra GPU has its own context and buffers

# One core's streaming rate: two cores cannot drain a server's RAM. With the efficiency and
# per-token overhead in `speed` it gives this 2-core box ~47 tok/s on Qwen2.5-Coder-0.5B (54
# measured) and ~146 on SmolLM2-135M (159 measured; FACTS.md), at short context.
CPU_CORE_GBPS = 30.0
DEFAULT_RAM_GBPS = 60.0  # when the machine does not report it (dual-channel DDR5 class)
DEFAULT_GPU_GBPS = 300.0
# CPU prefill FLOP/s per core: 285 tok/s x 2 x 0.494e9 FLOP on this project's 2-core
# AVX-512 box (FACTS.md); AVX2-only cores do about half.
CPU_PREFILL_FLOPS = {"avx512": 140e9, "other": 70e9}


def ram_reserve(hw: Hardware) -> int:
    """RAM kept for the OS and the appliance: max(2 GiB, 10%)."""
    return max(RAM_RESERVE_MIN, int(hw.ram_total_bytes * RAM_RESERVE_FRACTION))


def memory_budget(hw: Hardware) -> Budget:
    """What the plan may use on `hw`, with the arithmetic that led there (`derivation`)."""
    ram = max(0, hw.ram_available_bytes - ram_reserve(hw))
    ram_gbps = hw.ram_bandwidth_gbps or DEFAULT_RAM_GBPS
    cpu_gbps = min(ram_gbps, hw.cpu.physical_cores * CPU_CORE_GBPS)
    assumed = "" if hw.ram_bandwidth_gbps else " assumed"
    lines = [
        f"RAM: {gib(hw.ram_available_bytes)} available - {gib(ram_reserve(hw))} reserve "
        f"(max(2 GiB, 10%)) = {gib(ram)}",
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


def _gpu_budget(hw: Hardware, vendor: str, backend: Backend, base: dict[str, Any]) -> Budget:
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
        f"GPU: {len(gpus)} x {gpus[0].name}, {gib(sum(g.free_bytes for g in gpus))} free"
        + (f" (llama.cpp tensor split, {gib(EXTRA_GPU_OVERHEAD)} per extra GPU)" if len(gpus) > 1 else ""),
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


def _apple_budget(hw: Hardware, base: dict[str, Any]) -> Budget:
    """Apple Silicon: the Metal working-set budget, which the detector reports as free."""
    gpu = next(g for g in hw.gpus if g.vendor == "apple")
    base["derivation"][:] = [
        f"Metal working-set budget {gib(gpu.free_bytes)} of {gib(hw.ram_total_bytes)} unified memory "
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

    def fits(self, gpu: int, ram: int, runtime: RuntimeKind) -> bool:
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
