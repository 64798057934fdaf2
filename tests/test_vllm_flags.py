"""vLLM's flags derived from real plans: the RTX 4090 and H100 profiles, and this CPU box.

The plans come from the planner on the bundled hardware profiles (every catalog model assumed
downloadable), so these tests break when the planner and the launch disagree.
"""

from __future__ import annotations

import json

import pytest

from appliance.planner import Candidate, assume_downloadable, plan
from appliance.profiles import load_profile
from quantization.catalog import load_catalog
from runtimes.vllm.flags import (
    FlagsError,
    GpuMemory,
    VllmTarget,
    agent_flags,
    gpu_memory_utilization,
    quantization_flag,
    vllm_args,
)

GiB = 1024**3
MiB = 1024**2


def _main(profile: str) -> tuple[Candidate, object]:
    hw = load_profile(profile)
    c = plan(hw, available=assume_downloadable).main
    assert c is not None and c.runtime == "vllm", f"{profile}: expected a vLLM main model"
    return c, hw


def _target(c: Candidate, checkpoint: str = "") -> VllmTarget:
    model = load_catalog().get(c.model)
    art = model.artifact(c.quant)
    return VllmTarget(
        model=model,
        checkpoint=checkpoint or art.repo,
        checkpoint_format=art.format,
        max_model_len=c.n_ctx,
        max_num_seqs=c.slots,
        kv_type=c.kv_type,
        tensor_parallel=c.tensor_parallel,
    )


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def _gpus(hw) -> list[GpuMemory]:
    return [GpuMemory(g.total_bytes, g.free_bytes) for g in hw.gpus if g.vendor == "nvidia"]


def test_rtx_4090_plan_becomes_an_awq_marlin_launch_that_fits_beside_the_desktop():
    c, hw = _main("rtx-4090")
    launch = vllm_args(_target(c), 8100, device="cuda", gpus=_gpus(hw), compute_capability=8.9)
    args = launch.args
    assert _flag(args, "--model") == load_catalog().get(c.model).artifact(c.quant).repo
    assert _flag(args, "--served-model-name") == c.model
    assert _flag(args, "--max-model-len") == str(c.n_ctx)
    assert _flag(args, "--max-num-seqs") == str(c.slots)
    assert _flag(args, "--quantization") == "awq_marlin"  # plain "awq" would force the slow kernel
    assert _flag(args, "--kv-cache-dtype") == "auto"
    assert "--enable-prefix-caching" in args
    assert _flag(args, "--host") == "127.0.0.1" and _flag(args, "--port") == "8100"
    # Qwen3-Coder's XML tool calls, not Hermes; it has no thinking mode, so no reasoning parser.
    assert _flag(args, "--tool-call-parser") == "qwen3_coder" and "--enable-auto-tool-choice" in args
    assert "--reasoning-parser" not in args
    # Xorg and gnome-shell hold ~0.6 GiB: what vLLM claims must be free, with room for its context.
    gpu = hw.gpus[0]
    util = float(_flag(args, "--gpu-memory-utilization"))
    claimed = util * gpu.total_bytes
    assert claimed <= gpu.free_bytes - 768 * MiB
    assert claimed >= gpu.free_bytes - 768 * MiB - 0.01 * gpu.total_bytes  # rounded down, not wasted
    # ... and still holds what the plan needs, less the planner's own safety margin.
    assert claimed >= c.memory.gpu_bytes - c.memory.margin_bytes
    assert "VLLM_CPU_KVCACHE_SPACE" not in launch.env


def test_h100_plan_is_fp8_and_leaves_the_small_models_gpu_memory():
    c, hw = _main("h100-80gb")
    small = plan(hw, available=assume_downloadable).small
    reserve = small.memory.gpu_bytes if small and small.placement == "gpu" else 0
    assert reserve > 0, "the H100 plan puts the side-task model on the GPU too"
    alone = vllm_args(_target(c), 8100, device="cuda", gpus=_gpus(hw), compute_capability=9.0)
    shared = vllm_args(
        _target(c), 8100, device="cuda", gpus=_gpus(hw), compute_capability=9.0, reserve_bytes=reserve
    )
    assert _flag(shared.args, "--quantization") == "fp8"
    util_alone = float(_flag(alone.args, "--gpu-memory-utilization"))
    util_shared = float(_flag(shared.args, "--gpu-memory-utilization"))
    total = hw.gpus[0].total_bytes
    assert util_shared * total + reserve <= hw.gpus[0].free_bytes
    assert util_alone - util_shared >= reserve / total - 0.011
    assert _flag(shared.args, "--max-model-len") == str(c.n_ctx)


@pytest.mark.parametrize("profile", ["rtx-4090", "rtx-3090", "2x-rtx-3090", "a100-80gb", "h100-80gb"])
def test_the_plan_prints_the_utilization_serve_passes(profile):
    """`appliance plan`'s launch line and `appliance serve` size --gpu-memory-utilization with one
    formula: the free memory of the GPUs vLLM uses, less what the small model loads after it."""
    c, hw = _main(profile)
    p = plan(hw, available=assume_downloadable)
    reserve = p.small.memory.gpu_bytes if p.small else 0
    gpus = _gpus(hw)[: c.tensor_parallel]
    cc = p.budget.compute_capability
    launch = vllm_args(_target(c), 8100, gpus=gpus, compute_capability=cc, reserve_bytes=reserve)
    line = next(n for n in p.notes if n.startswith("main: vLLM"))
    printed = _flag(line.split(), "--gpu-memory-utilization")
    assert printed is not None and printed == _flag(launch.args, "--gpu-memory-utilization")


def test_quantization_follows_the_checkpoints_own_config(tmp_path):
    """A compressed-tensors FP8 checkpoint is not "fp8" to vLLM: the folder's config wins."""
    model = load_catalog().get("devstral-small-24b")
    target = VllmTarget(model, str(tmp_path), "fp8", 32768, 4)
    assert quantization_flag(target, 8.9) == "fp8"  # no config.json yet: the catalog's format
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"quantization_config": {"quant_method": "compressed-tensors"}}))
    assert quantization_flag(target, 8.9) == "compressed-tensors"
    config.write_text(json.dumps({"quantization_config": {"quant_method": "awq"}}))
    assert quantization_flag(target, 7.5) == "awq"  # Turing: no Marlin kernels
    assert quantization_flag(target, 8.0) == "awq_marlin"
    config.write_text(json.dumps({"architectures": ["MistralForCausalLM"]}))
    assert quantization_flag(target, 8.9) is None  # an unquantized folder


@pytest.mark.parametrize(
    ("name", "parser", "reasoning"),
    [
        ("qwen3-30b-a3b", "hermes", "qwen3"),
        ("qwen3-coder-30b-a3b-instruct", "qwen3_coder", None),
        ("devstral-small-24b", "mistral", None),
        ("qwen2.5-coder-0.5b-instruct", "hermes", None),
        ("smollm2-135m-instruct", None, None),
    ],
)
def test_tool_and_reasoning_parsers_per_family(name, parser, reasoning):
    flags = agent_flags(load_catalog().get(name))
    assert _flag(flags, "--tool-call-parser") == parser
    assert ("--enable-auto-tool-choice" in flags) == (parser is not None)
    assert _flag(flags, "--reasoning-parser") == reasoning


def test_utilization_refuses_a_gpu_someone_else_fills():
    busy = [GpuMemory(total_bytes=24 * GiB, free_bytes=1 * GiB)]
    with pytest.raises(FlagsError, match="free"):
        gpu_memory_utilization(busy)
    # Tensor parallel: the tightest GPU decides for all of them.
    two = [GpuMemory(24 * GiB, 23 * GiB), GpuMemory(24 * GiB, 20 * GiB)]
    assert gpu_memory_utilization(two) == gpu_memory_utilization([two[1]])


def test_cpu_build_gets_kv_space_and_no_gpu_flags():
    model = load_catalog().get("smollm2-135m-instruct")
    target = VllmTarget(model, "/m/hf", "bf16", 8192, 2)
    launch = vllm_args(target, 8200, device="cpu", ram_available_bytes=8 * GiB)
    gpu_only = ("--gpu-memory-utilization", "--quantization", "--kv-cache-dtype", "--tensor-parallel-size")
    assert not [flag for flag in gpu_only if flag in launch.args]
    # 30 layers x 3 KV heads x 64 x 2 (K, V) x 2 bytes x 8192 tokens = 180 MiB -> the 1 GiB minimum.
    assert launch.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    big = vllm_args(VllmTarget(model, "/m/hf", "bf16", 131072, 2), 8200, device="cpu")
    assert big.env["VLLM_CPU_KVCACHE_SPACE"] == "4"  # 2.8 GiB + 10% -> 4 GiB
    with pytest.raises(FlagsError, match="lower --ctx"):
        vllm_args(VllmTarget(model, "/m/hf", "bf16", 131072, 2), 8200, device="cpu", ram_available_bytes=GiB)
