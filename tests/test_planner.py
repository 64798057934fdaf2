"""The fit planner: what each kind of machine should serve, and why.

Profile expectations assume every catalog model can be downloaded (`assume_downloadable`),
since they ask what the machine should run, not what this build box happens to hold; the
2-core test uses what is really obtainable offline here.
"""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from appliance.cli import main as cli_main
from appliance.hardware.types import CPU, GPU, Hardware
from appliance.planner import Candidate, Option, Plan, assume_downloadable, memory_budget, plan
from appliance.planner.budget import EXTRA_GPU_OVERHEAD
from appliance.planner.needs import MAIN_GOOD_CTX, MAIN_MIN_CTX, SMALL_MAX_PARAMS, TYPICAL_CTX
from appliance.planner.report import print_plan
from appliance.planner.speed import GPU_EFFICIENCY, GPU_TOKEN_OVERHEAD_S, decode_speed
from appliance.profiles import list_profiles, load_profile
from appliance.units import GiB
from quantization import formats
from quantization.catalog import Catalog, load_catalog
from quantization.estimator import estimate

PROFILES = list_profiles()


def _plan(profile: str) -> Plan:
    return plan(load_profile(profile), available=assume_downloadable)


def _family(c: Candidate) -> str:
    model = load_catalog().get(c.model)
    assert model is not None
    return model.family


def _nominal_bpw(c: Candidate) -> float:
    return formats.weight_bpw(c.format, c.quant)


def _fits(p: Plan, c: Candidate) -> bool:
    b = p.budget
    gpu_budget = b.vllm_gpu_bytes if c.runtime == "vllm" else b.gpu_bytes
    if b.unified:
        return c.memory.gpu_bytes + c.memory.cpu_bytes <= gpu_budget
    return c.memory.gpu_bytes <= gpu_budget and c.memory.cpu_bytes <= b.ram_bytes


def _gpu_box(free_gib: float, ram_gib: float = 64, cc: str = "8.9") -> Hardware:
    """A made-up single-NVIDIA-GPU machine with exactly `free_gib` of free VRAM."""
    gpu = GPU(
        index=0,
        vendor="nvidia",
        name="Test GPU",
        total_bytes=int((free_gib + 0.5) * GiB),
        free_bytes=int(free_gib * GiB),
        compute_capability=cc,
        bandwidth_gbps=500,
    )
    cpu = CPU(model="test", physical_cores=8, logical_cores=16, arch="x86_64", flags=["avx2"])
    return Hardware(
        name="test",
        source="test",
        os="linux",
        cpu=cpu,
        ram_total_bytes=int(ram_gib * GiB),
        ram_available_bytes=int(ram_gib * GiB * 0.9),
        ram_bandwidth_gbps=60,
        gpus=[gpu],
    )


# ----------------------------------------------------------------------------- every profile


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_plans_and_the_choice_fits(profile: str) -> None:
    """Every profile must yield a main model, and main plus small must fit the memory budget
    together (headroom never negative): a plan that does not load is worse than none."""
    p = _plan(profile)
    assert p.main is not None, p.notes
    assert _fits(p, p.main)
    if p.small is not None:
        assert _fits(p, p.small)
        assert p.small.model != p.main.model
    assert p.headroom_gpu_bytes >= 0 and p.headroom_ram_bytes >= 0
    assert p.main.reason and p.main.tok_s > 0 and p.main.n_ctx >= MAIN_MIN_CTX
    json.dumps(p.model_dump(mode="json"))


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_prefers_a_usable_agent_context(profile: str) -> None:
    """A coding agent's prompt alone is ~8k tokens; every profile here has the memory for a
    model at >= 32k, so the chosen main model must get it."""
    assert _plan(profile).main.n_ctx >= MAIN_GOOD_CTX  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- expectations


def test_rtx_4090_runs_qwen3_30b_a3b_at_4_bits_with_32k() -> None:
    """24 GB: the 30B-A3B MoE (Qwen3-30B-A3B or its Coder variant, same shape) at ~4 bits is
    ~17-19 GB and leaves room for >= 32k of KV; at 8 bits (31-32 GB) it cannot fit, and
    dense 24-32B models either do not fit at 32k or rank lower and run 5x slower."""
    m = _plan("rtx-4090").main
    assert m is not None
    assert _family(m) == "qwen3moe"
    assert 3.5 <= _nominal_bpw(m) <= 5.0
    assert m.n_ctx >= 32768
    assert m.placement == "gpu"


def test_rtx_4060_runs_a_small_model_or_the_moe_with_experts_in_ram() -> None:
    """8 GB of VRAM holds a 4-8B model at 4 bits, or the 30B-A3B's attention and KV with its
    routed experts in the 32 GB of system RAM (only 3B parameters are read per token, so RAM
    bandwidth still gives a usable speed)."""
    m = _plan("rtx-4060").main
    assert m is not None
    spec = load_catalog().get(m.model)
    moe_in_ram = _family(m) == "qwen3moe" and m.placement == "gpu+ram"
    small_on_gpu = spec is not None and spec.params_total <= 9e9 and m.placement == "gpu"
    assert moe_in_ram or small_on_gpu, m
    if moe_in_ram:
        assert m.memory.cpu_bytes > 10 * GiB and m.memory.gpu_bytes <= 8 * GiB


def test_mac_64gb_runs_the_moe_at_q8_or_devstral_at_q6_with_long_context() -> None:
    """A 64 GB Mac gives Metal ~48 GB: enough for the 30B-A3B at Q8_0 (32 GB) or Devstral 24B
    at Q6_K or better (19-25 GB), each with >= 32k context."""
    m = _plan("mac-m2-max-64gb").main
    assert m is not None
    moe_q8 = _family(m) == "qwen3moe" and m.quant.upper() == "Q8_0"
    devstral = m.model.startswith("devstral") and _nominal_bpw(m) >= formats.gguf_file_bpw("Q6_K")
    assert moe_q8 or devstral, m
    assert m.n_ctx >= 32768 and m.runtime == "llama.cpp"


def test_mac_16gb_runs_a_4b_to_12b_class_model() -> None:
    """16 GB leaves Metal ~10 GB: a 4-12B model (the Gemma 3 4B / 12B class) at ~4-5 bits with
    its KV cache; 14B+ models do not fit at a usable context. "Class" is read as size: which
    model of that size wins is the catalog's quality rank (Qwen3-8B ranks above Gemma 3 12B)."""
    m = _plan("mac-m2-16gb").main
    assert m is not None
    spec = load_catalog().get(m.model)
    assert spec is not None and 3.5e9 <= spec.params_total <= 13e9, m.model
    assert m.n_ctx >= 16384 and m.runtime == "llama.cpp"


def test_this_2_core_box_runs_the_best_model_it_can_obtain() -> None:
    """Here only the PyPI-wheel models can be obtained; of them only Qwen2.5-Coder-0.5B does
    tool calls (SmolLM2 has none, the Gemma 3 270M is a base model), and it runs ~50 tok/s on
    two cores. Better models that need a download are suggested, not chosen."""
    p = plan(load_profile("cpu-2core-24gb"), available=lambda m, a: a.obtainable_offline)
    assert p.main is not None
    assert p.main.model == "qwen2.5-coder-0.5b-instruct"
    assert (p.main.runtime, p.main.placement) == ("llama.cpp", "cpu")
    assert p.main.n_ctx == 32768
    assert p.suggested and all(not s.download.startswith("pypi") for s in p.suggested)
    reasons = {r.model: r.reason for r in p.rejected if r.role == "main" and r.kind == "role"}
    assert "tool" in reasons["smollm2-135m-instruct"] and "base model" in reasons["gemma-3-270m"]


def test_h100_serves_an_fp8_or_awq_checkpoint_on_vllm() -> None:
    """An 80 GB Hopper GPU has FP8 tensor cores and room for an 8-bit checkpoint with long
    context: vLLM (batched serving) with FP8 or AWQ, not llama.cpp."""
    m = _plan("h100-80gb").main
    assert m is not None
    assert m.runtime == "vllm" and m.format in ("fp8", "awq")
    assert m.n_ctx >= 32768


@pytest.mark.parametrize("profile", ["rtx-3090", "2x-rtx-3090", "a100-80gb"])
def test_ampere_never_picks_fp8(profile: str) -> None:
    """Ampere (cc 8.0/8.6) has no FP8 tensor cores: W8A8 FP8 cannot run, so no FP8
    checkpoint is a candidate, and the rejection says why."""
    p = _plan(profile)
    assert all(c.format != "fp8" for c in p.candidates["main"])
    fp8 = [r for r in p.rejected if r.quant == "FP8" and r.runtime == "vllm"]
    assert fp8 and all("8.9" in r.reason for r in fp8)


def test_two_identical_gpus_use_tensor_parallel_and_a_split() -> None:
    """Two 3090s: llama.cpp splits over both (less one context per extra GPU); vLLM runs
    tensor parallel 2 over the smaller free memory of the two."""
    hw = load_profile("2x-rtx-3090")
    b = memory_budget(hw)
    free = [g.free_bytes for g in hw.gpus]
    assert b.gpu_bytes == sum(free) - EXTRA_GPU_OVERHEAD
    assert (b.vllm_tp, b.vllm_gpu_bytes) == (2, 2 * min(free))
    m = _plan("2x-rtx-3090").main
    assert m is not None and m.runtime == "vllm" and m.tensor_parallel == 2


# ----------------------------------------------------------------------------- rules


def test_cpu_budget_keeps_a_reserve_for_the_os() -> None:
    """CPU-only: available RAM minus max(2 GiB, 10% of total) for the OS and the app."""
    hw = load_profile("cpu-32gb")
    b = memory_budget(hw)
    assert b.backend == "cpu" and b.gpu_bytes == 0
    assert b.ram_bytes == hw.ram_available_bytes - max(2 * GiB, int(0.1 * hw.ram_total_bytes))


def test_apple_budget_is_the_metal_working_set() -> None:
    """On a Mac the GPU budget is Metal's working set, and there is no separate RAM pool."""
    hw = load_profile("mac-m2-max-64gb")
    b = memory_budget(hw)
    assert b.unified and b.backend == "metal" and b.gpu_bytes == hw.gpus[0].free_bytes


def test_experts_go_to_ram_only_when_the_gpu_cannot_hold_the_moe() -> None:
    """On a 24 GB GPU the MoE fits whole at >= 32k, so experts stay on the GPU (RAM bandwidth
    is 10x slower); on 8 GB it does not, so experts-in-RAM is considered."""
    big = [c for c in _plan("rtx-4090").candidates["main"] if c.placement == "gpu+ram"]
    small = [c for c in _plan("rtx-4060").candidates["main"] if c.placement == "gpu+ram"]
    assert not big and small


def test_q8_kv_cache_only_when_it_buys_the_context() -> None:
    """f16 KV is kept when it reaches 32k; on a GPU where f16 stops short of 32k but q8_0 gets
    there, the 8-bit cache is chosen."""
    model = load_catalog().get("qwen3-8b")
    assert model is not None
    art = model.artifact("Q4_K_M")
    assert art is not None
    one = Catalog([model.model_copy(update={"artifacts": [art]})])
    need_q8 = estimate(model, art, 32768, n_seq=2, kv_type="q8_0", backend="cuda").gpu_bytes
    need_f16 = estimate(model, art, 32768, n_seq=2, kv_type="f16", backend="cuda").gpu_bytes
    tight = plan(_gpu_box((need_q8 + 64 * 2**20) / GiB, cc="7.5"), assume_downloadable, one).main
    roomy = plan(_gpu_box((need_f16 + 64 * 2**20) / GiB, cc="7.5"), assume_downloadable, one).main
    assert tight is not None and (tight.kv_type, tight.n_ctx >= 32768) == ("q8_0", True)
    assert roomy is not None and (roomy.kv_type, roomy.n_ctx >= 32768) == ("f16", True)


def test_a_main_model_below_16k_is_flagged_poor() -> None:
    """Below 16k the agent's ~8k prompt leaves little room for the session: still a
    candidate, but ranked low and warned about; here a split that keeps the first layers in RAM
    reaches 32k at a usable speed, and ranks above it."""
    model = load_catalog().get("qwen3-8b")
    assert model is not None
    art = model.artifact("Q4_K_M")
    assert art is not None
    one = Catalog([model.model_copy(update={"artifacts": [art]})])
    need = estimate(model, art, 12288, n_seq=2, kv_type="q8_0", backend="cuda").gpu_bytes
    p = plan(_gpu_box(need / GiB, cc="7.5"), assume_downloadable, one)
    whole = next(c for c in p.candidates["main"] if c.placement == "gpu")
    assert whole.n_ctx < 16384 and whole.tier == 0
    assert any("poor main model" in w for w in whole.warnings)
    assert p.main is not None and p.main.placement == "gpu+ram" and p.main.n_ctx >= 32768
    assert p.main.tier == 2 and p.main.n_gpu_layers > 0


def test_nothing_fits_is_explained() -> None:
    """A GPU too small for anything at 8k yields no main model and a rejection per artifact
    that says how much it needs against the budget."""
    model = load_catalog().get("qwen3-8b")
    assert model is not None
    one = Catalog([model])
    p = plan(_gpu_box(1.0, ram_gib=4), assume_downloadable, one)
    assert p.main is None
    memory = [r for r in p.rejected if r.kind == "memory"]
    assert memory and all("does not fit even at 8k" in r.reason and "budget" in r.reason for r in memory)
    assert any("nothing that can be obtained" in n for n in p.notes)


def test_decode_speed_is_bandwidth_over_bytes_per_token() -> None:
    """Dense on one GPU: tok/s = 1 / (bytes per token / (bandwidth x efficiency) + overhead),
    bytes = the weights plus the KV at the typical fill."""
    from quantization.estimator import kv_cache_bytes

    model = load_catalog().get("qwen3-8b")
    assert model is not None
    art = model.artifact("Q4_K_M")
    assert art is not None
    budget = memory_budget(_gpu_box(20))
    opt = Option(model, art, "llama.cpp", "gpu", "cuda")
    tok_s, basis = decode_speed(opt, "f16", 32768, budget)
    read = art.size_bytes + kv_cache_bytes(model.arch, TYPICAL_CTX["main"], "f16")
    expected = 1 / (read / (500e9 * GPU_EFFICIENCY) + GPU_TOKEN_OVERHEAD_S)
    assert tok_s == pytest.approx(expected)
    assert "500 GB/s" in basis


def test_unobtainable_better_models_are_suggested_with_their_download() -> None:
    """Only obtainable models are chosen; the better ones that need a download are listed
    with where to get them."""
    p = plan(load_profile("rtx-4090"), available=lambda m, a: a.obtainable_offline)
    assert p.main is not None and p.main.available
    assert p.main.model == "qwen2.5-coder-0.5b-instruct"
    top = p.suggested[0]
    assert top.role == "main" and top.download.startswith("huggingface:")
    assert load_catalog().get(top.model).quality > p.main.quality  # type: ignore[union-attr]


def test_default_availability_is_the_store(tmp_path, monkeypatch) -> None:
    """With no `available` given, the store decides: offline (PyPI) artifacts count, hub-only
    ones do not until installed."""
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    p = plan(load_profile("rtx-4090"))
    assert p.main is not None and p.main.download and p.main.download.startswith("pypi")


def test_small_model_is_smaller_than_main() -> None:
    """The side-task model exists to spare main's time: it is a small model well below main."""
    for profile in PROFILES:
        p = _plan(profile)
        if p.small is not None and p.main is not None:
            specs = load_catalog()
            small, main = specs.get(p.small.model), specs.get(p.main.model)
            assert small is not None and main is not None
            assert small.params_total <= min(SMALL_MAX_PARAMS, main.params_total / 2)


# ----------------------------------------------------------------------------- output


@pytest.mark.parametrize("profile", ["rtx-4090", "cpu-2core-24gb", "mac-m2-16gb"])
def test_print_plan_shows_choice_reason_and_rejections(profile: str) -> None:
    p = _plan(profile)
    console = Console(record=True, width=200)
    print_plan(p, console)
    text = console.export_text()
    assert p.main is not None and p.main.display_name in text
    assert "Main model" in text and "Small model" in text and "Ruled out" in text
    assert "Budget" in text and "tok/s" in text


def test_cli_plan_json(capsys) -> None:
    assert cli_main(["plan", "--profile", "h100-80gb", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"hardware", "budget", "main", "small", "candidates", "rejected", "suggested", "notes"} <= set(
        data
    )
    Plan.model_validate(data)


def test_cpu_speed_model_matches_this_box() -> None:
    """The CPU constants are calibrated on this 2-core box (FACTS.md: llama.cpp decodes
    Qwen2.5-Coder-0.5B at 54 tok/s and SmolLM2-135M at 159 tok/s): at short context the
    estimate must land within 25% of both."""
    budget = memory_budget(load_profile("cpu-2core-24gb"))
    for name, measured in [("qwen2.5-coder-0.5b-instruct", 54), ("smollm2-135m-instruct", 159)]:
        model = load_catalog().get(name)
        assert model is not None
        opt = Option(model, model.artifacts[0], "llama.cpp", "cpu", "cpu")
        tok_s, _ = decode_speed(opt, "f16", 256, budget)
        assert tok_s == pytest.approx(measured, rel=0.25)
