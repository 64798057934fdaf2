"""What one option occupies at a given context: the estimator's breakdown, split into GPU and
system-RAM bytes the way each placement loads it, and the `Memory` a candidate reports.

The search for a context (fit) and the decode-speed model both size the KV cache, so the rule
that sizes vLLM's fp8 cache lives here, once.
"""

from __future__ import annotations

from appliance.planner.budget import Room
from appliance.planner.types import Memory, Option
from quantization.estimator import MemoryEstimate, estimate


def kv_size_type(kv: str) -> str:
    """vLLM's fp8 cache sized as q8_0 (8.5 bits, slightly conservative), as the estimator does."""
    return "q8_0" if kv == "fp8" else kv


def memory_of(opt: Option, n_ctx: int, kv: str, slots: int) -> MemoryEstimate:
    """The estimator's breakdown (it sizes vLLM checkpoints too); tensor parallel adds a runtime per GPU."""
    est = estimate(
        opt.model,
        opt.artifact,
        n_ctx,
        n_seq=slots,
        kv_type=kv_size_type(kv),
        backend=opt.backend,
        n_cpu_moe=opt.n_cpu_moe if opt.placement == "gpu+ram" else 0,
        n_gpu_layers=opt.n_gpu_layers if opt.splits_layers else -1,
    )
    if opt.tp > 1:
        est = est.model_copy(update={"overhead_bytes": est.overhead_bytes * opt.tp})
    return est


def usage(opt: Option, est: MemoryEstimate) -> tuple[int, int]:
    """(GPU bytes, system RAM bytes). The estimator's "device" is RAM for the CPU backend."""
    if opt.placement == "cpu":
        return 0, est.total_bytes
    return est.gpu_bytes, est.cpu_bytes


def gpu_room(room: Room, opt: Option) -> int:
    """The GPU pool `opt` draws from: vLLM's (identical GPUs) or llama.cpp's."""
    return room.vllm_gpu if opt.runtime == "vllm" else room.gpu


def candidate_memory(est: MemoryEstimate, room: Room, opt: Option) -> Memory:
    """The estimate as a candidate reports it, with the headroom left in `room` after it."""
    gpu, ram = usage(opt, est)
    on_cpu = opt.placement == "cpu"
    return Memory(
        weights_bytes=est.weights_bytes,
        weights_gpu_bytes=0 if on_cpu else est.weights_gpu_bytes,
        weights_cpu_bytes=est.weights_bytes if on_cpu else est.weights_cpu_bytes,
        kv_bytes=est.kv_bytes,
        kv_cpu_bytes=0 if on_cpu else est.kv_cpu_bytes,
        compute_bytes=est.compute_bytes,
        overhead_bytes=est.overhead_bytes,
        margin_bytes=est.margin_bytes,
        gpu_bytes=gpu,
        cpu_bytes=ram,
        headroom_gpu_bytes=gpu_room(room, opt) - gpu - (ram if room.unified else 0),
        headroom_ram_bytes=room.ram - (0 if room.unified else ram),
    )
