"""Memory estimator: KV formula on known shapes, sliding windows, MoE offload, fitting,
and (slow) the comparison with what llama.cpp really allocates."""

from __future__ import annotations

import pytest

from quantization.catalog import Architecture, Artifact, ModelSpec, load_catalog
from quantization.estimator import (
    GiB,
    MiB,
    block_bytes,
    compute_buffer_bytes,
    estimate,
    ffn_width,
    input_table_bytes,
    kv_cache_bytes,
    kv_cells,
    max_context,
    output_bytes,
)

QWEN3_MOE_ARCH = Architecture(
    n_layers=48, n_heads=32, n_kv_heads=4, head_dim=128, hidden_size=2048, vocab_size=151936,
    n_experts=128, n_experts_used=8,
)
GEMMA3_27B_ARCH = Architecture(
    n_layers=62, n_heads=32, n_kv_heads=16, head_dim=128, hidden_size=5376, vocab_size=262208,
    tie_word_embeddings=True, sliding_window=1024, sliding_window_pattern=6,
)


def model(name: str) -> ModelSpec:
    m = load_catalog().get(name)
    assert m is not None, name
    return m


def gguf(m: ModelSpec, quant: str) -> Artifact:
    art = m.artifact(quant)
    assert art is not None, (m.name, quant)
    return art


def test_kv_formula_qwen3_moe_32k() -> None:
    # 48 layers x (K + V) x 4 kv heads x 128 dims x 32768 cells x 2 bytes = 3 GiB
    assert kv_cache_bytes(QWEN3_MOE_ARCH, 32768) == 48 * 2 * 4 * 128 * 32768 * 2 == 3 * GiB
    assert kv_cache_bytes(QWEN3_MOE_ARCH, 32768, "q8_0") == 3 * GiB * 8.5 // 16
    assert kv_cache_bytes(QWEN3_MOE_ARCH, 32768, "q4_0") == 3 * GiB * 4.5 // 16
    assert kv_cache_bytes(model("qwen3-30b-a3b").arch, 32768) == 3 * GiB


def test_context_is_padded_to_256_cells() -> None:
    assert kv_cache_bytes(QWEN3_MOE_ARCH, 1000) == kv_cache_bytes(QWEN3_MOE_ARCH, 1024)
    assert kv_cells(QWEN3_MOE_ARCH, 1) == (256, 256)


def test_slots_share_a_unified_cache() -> None:
    # n_ctx is the total: 4 slots of 8k cost what 1 slot of 32k costs
    assert kv_cache_bytes(QWEN3_MOE_ARCH, 32768, n_seq=4) == kv_cache_bytes(QWEN3_MOE_ARCH, 32768)
    # per-sequence streams: 1024 cells / 3 = 341, padded to 512 per stream
    assert kv_cells(QWEN3_MOE_ARCH, 1000, n_seq=3, kv_unified=False) == (1536, 1536)


def test_sliding_window_caps_gemma_kv() -> None:
    a = GEMMA3_27B_ARCH
    assert a.n_swa_layers == 52  # 5 of every 6 layers
    full, swa = kv_cells(a, 131072, n_seq=1, n_ubatch=512)
    assert (full, swa) == (131072, 1536)  # pad256(1024 + 512)
    assert kv_cells(a, 131072, n_seq=4, n_ubatch=512)[1] == 4608  # window x 4 slots + ubatch
    assert kv_cells(a, 1024, n_ubatch=512)[1] == 1024  # never more than the context
    per_cell_layer = 2 * 16 * 128 * 2
    capped = kv_cache_bytes(a, 131072)
    assert capped == per_cell_layer * (10 * 131072 + 52 * 1536)
    uncapped = kv_cache_bytes(a, 131072, swa_full=True)
    assert uncapped == per_cell_layer * 62 * 131072
    assert capped < uncapped / 5


def test_real_gemma_270m_kv_matches_llamacpp_log() -> None:
    # llama.cpp logged 24.00 MiB (3 global layers, 8192 cells) + 15.00 MiB (15 SWA layers, 1024 cells)
    assert kv_cache_bytes(model("gemma-3-270m").arch, 8192) == 39 * MiB
    assert kv_cache_bytes(model("gemma-3-270m").arch, 8192, n_seq=4) == int(61.5 * MiB)


def test_ffn_width_recovered_from_parameters() -> None:
    assert ffn_width(model("qwen2.5-coder-0.5b-instruct")) == pytest.approx(4864, rel=0.01)
    assert ffn_width(model("qwen3-30b-a3b")) == pytest.approx(8 * 768, rel=0.02)


def test_compute_buffer_logits_dominate_with_flash_attention() -> None:
    m = model("qwen2.5-coder-0.5b-instruct")
    small = compute_buffer_bytes(m, 2048)
    assert small == compute_buffer_bytes(m, 32768)  # the f16 mask is small next to the logits
    assert small == pytest.approx((151936 * 512 + 2 * 896 * 512 + 151936) * 4, rel=1e-6)
    assert compute_buffer_bytes(m, 8192, n_ubatch=1024) == pytest.approx(2 * small, rel=0.01)
    # without flash attention the n_kv x tokens x heads KQ matrix grows with the context
    assert compute_buffer_bytes(m, 65536, flash_attn=False) > 3 * small


def test_estimate_parts_and_totals() -> None:
    m = model("qwen3-30b-a3b")
    art = gguf(m, "Q4_K_M")
    e = estimate(m, art, 32768)
    assert e.weights_bytes == art.size_bytes
    assert e.kv_bytes == 3 * GiB
    assert 200 * MiB < e.compute_bytes < 600 * MiB
    assert e.overhead_bytes > 0 and e.margin_bytes > 0
    assert e.total_bytes == e.gpu_bytes + e.cpu_bytes
    assert e.cpu_bytes == 0
    # untied model: the input embedding table stays in host memory on GPU backends
    assert e.weights_gpu_bytes < e.weights_bytes
    assert estimate(m, art, 32768, backend="cpu").weights_gpu_bytes == e.weights_bytes
    # RTX 4090 (24 GiB): about 4 bits with 32k context fits
    assert e.gpu_bytes < 23.5 * GiB


def test_backend_overheads() -> None:
    m = model("qwen3-8b")
    art = gguf(m, "Q4_K_M")
    over = {b: estimate(m, art, 8192, backend=b).overhead_bytes for b in ("cuda", "rocm", "metal", "cpu")}
    assert over["cpu"] == 0 < over["metal"] < over["cuda"] <= over["rocm"]
    assert 300 * MiB <= over["cuda"] <= 500 * MiB


def test_experts_in_ram_moves_weights_to_cpu() -> None:
    m = model("qwen3-30b-a3b")
    art = gguf(m, "Q4_K_M")
    on_gpu = estimate(m, art, 32768)
    split = estimate(m, art, 32768, experts_in_ram=True)
    experts_share = m.params_experts / m.params_total
    assert split.weights_cpu_bytes == pytest.approx(art.size_bytes * experts_share, rel=1e-6)
    assert split.cpu_bytes == split.weights_cpu_bytes > 15 * GiB
    assert split.kv_bytes == on_gpu.kv_bytes  # KV and attention stay on the GPU
    assert split.gpu_bytes < 8 * GiB < on_gpu.gpu_bytes  # an RTX 4060 8 GB can hold the rest
    # dense models and the CPU backend have nothing to move
    dense = model("qwen3-8b")
    assert estimate(dense, gguf(dense, "Q4_K_M"), 8192, experts_in_ram=True).weights_cpu_bytes == 0
    assert estimate(m, art, 8192, backend="cpu", experts_in_ram=True).weights_cpu_bytes == 0


def test_partial_expert_offload_against_the_real_tensor_sizes() -> None:
    """N of 48 layers' experts in RAM for Qwen3-30B-A3B Q4_K_M, against the per-layer expert bytes
    of llama.cpp's Q4_K_M type choices (the synthetic writer's plan, whose total is the real file's
    size to 0.04%). Q6_K ffn_down in the first 6 layers makes them ~7% heavier than the average
    the estimator uses: it errs on the side of VRAM (puts up to ~0.2 GiB more on the GPU)."""
    from appliance.bench.synthetic_moe import QWEN3_30B_A3B, expert_layer_bytes, tensors

    m = model("qwen3-30b-a3b")
    art = gguf(m, "Q4_K_M")
    plan = tensors(QWEN3_30B_A3B, m.arch.vocab_size)
    assert sum(t.nbytes for t in plan) == pytest.approx(art.size_bytes, rel=0.001)
    per_layer = expert_layer_bytes(QWEN3_30B_A3B, m.arch.vocab_size)
    full = estimate(m, art, 32768)
    previous = full
    for n in (0, 1, 6, 12, 24, 36, 47, 48):
        split = estimate(m, art, 32768, n_cpu_moe=n)
        real = sum(per_layer[:n])
        assert split.weights_cpu_bytes == pytest.approx(real, rel=0.08, abs=1)
        assert abs(split.weights_cpu_bytes - real) < 0.25 * GiB
        assert split.weights_gpu_bytes + split.weights_cpu_bytes == full.weights_gpu_bytes
        assert split.gpu_bytes <= previous.gpu_bytes  # each layer moved frees VRAM
        previous = split
    assert estimate(m, art, 32768, n_cpu_moe=48).weights_cpu_bytes == pytest.approx(sum(per_layer), rel=0.01)
    assert estimate(m, art, 32768, n_cpu_moe=99) == estimate(m, art, 32768, experts_in_ram=True)


@pytest.mark.parametrize("name", ["devstral-small-24b", "gemma-3-27b-it"])
def test_partial_layer_offload_puts_output_and_last_blocks_on_the_gpu(name: str) -> None:
    """-ngl k (llama_model_base::load_tensors): the output layer takes the first GPU slot, then the
    last k - 1 blocks, each with its KV; the first blocks and theirs stay in RAM. Devstral is untied,
    Gemma 3 tied with sliding-window layers; k = n_layers + 1 (or more) is the whole model."""
    m = model(name)
    art = gguf(m, "Q4_K_M")
    n = m.arch.n_layers
    full = estimate(m, art, 32768, n_seq=2)
    assert estimate(m, art, 32768, n_seq=2, n_gpu_layers=n + 1) == full
    assert estimate(m, art, 32768, n_seq=2, n_gpu_layers=999) == full
    block, out = block_bytes(m, art), output_bytes(m, art)
    previous = None
    for k in range(n + 1):
        e = estimate(m, art, 32768, n_seq=2, n_gpu_layers=k)
        on_gpu = max(k - 1, 0)
        assert e.weights_gpu_bytes == on_gpu * block + (out if k else 0)
        assert e.weights_cpu_bytes == (n - on_gpu) * block + (0 if k else out)
        assert e.kv_bytes == full.kv_bytes and e.kv_cpu_bytes == full.kv_bytes * (n - on_gpu) // n
        assert e.cpu_bytes == e.weights_cpu_bytes + e.kv_cpu_bytes
        if previous is not None:  # each step moves a block (or the output) from RAM to VRAM
            assert e.gpu_bytes > previous.gpu_bytes and e.cpu_bytes < previous.cpu_bytes
        previous = e
    # the blocks and the output cover the file, less the untied input table (mmapped, as whole)
    one = estimate(m, art, 32768, n_seq=2, n_gpu_layers=1)
    uncounted = 0 if m.arch.tie_word_embeddings else input_table_bytes(m, art)
    assert one.weights_gpu_bytes + one.weights_cpu_bytes == pytest.approx(art.size_bytes - uncounted, abs=n)
    assert estimate(m, art, 32768, backend="cpu", n_gpu_layers=5) == estimate(m, art, 32768, backend="cpu")


def test_partial_layer_offload_and_expert_offload_together_are_refused() -> None:
    m = model("qwen3-30b-a3b")
    with pytest.raises(ValueError):
        estimate(m, gguf(m, "Q4_K_M"), 8192, n_cpu_moe=4, n_gpu_layers=10)


def test_quantized_v_cache_needs_flash_attention() -> None:
    m = model("qwen3-8b")
    with pytest.raises(ValueError):
        estimate(m, gguf(m, "Q4_K_M"), 8192, kv_type="q8_0", flash_attn=False)
    q8 = estimate(m, gguf(m, "Q4_K_M"), 32768, kv_type="q8_0")
    f16 = estimate(m, gguf(m, "Q4_K_M"), 32768)
    assert q8.kv_bytes == pytest.approx(f16.kv_bytes * 8.5 / 16, rel=1e-9)


def test_weights_fall_back_to_bits_per_weight() -> None:
    m = model("llama-3.1-8b-instruct")
    guess = Artifact(format="gguf", quant="Q4_K_M", size_bytes=0)
    real = gguf(m, "Q4_K_M")
    assert estimate(m, guess, 8192).weights_bytes == pytest.approx(real.size_bytes, rel=0.03)


def test_vllm_checkpoint_estimate() -> None:
    m = model("qwen3-30b-a3b")
    awq = next(a for a in m.artifacts if a.format == "awq")
    e = estimate(m, awq, 32768)
    assert e.weights_bytes == e.weights_gpu_bytes == awq.size_bytes
    assert e.kv_bytes == 3 * GiB
    assert e.overhead_bytes >= 1 * GiB  # torch + CUDA graphs


def test_max_context_monotone_and_tight() -> None:
    m = model("qwen3-8b")
    art = gguf(m, "Q4_K_M")
    budgets = [int(g * GiB) for g in (4, 5, 6, 7, 8, 10, 12, 16, 24, 32)]
    ctxs = [max_context(m, art, b) for b in budgets]
    assert ctxs == sorted(ctxs)
    assert ctxs[0] == 0  # 4 GiB cannot hold 5 GB of weights
    limit = m.context_extended or m.context_native
    assert ctxs[-1] == limit
    for b, c in zip(budgets, ctxs, strict=True):
        assert c % 256 == 0
        if 0 < c < limit:
            assert estimate(m, art, c).gpu_bytes <= b < estimate(m, art, c + 256).gpu_bytes
    # more slots never need less memory; q8_0 KV fits more context
    assert max_context(m, art, 8 * GiB, kv_type="q8_0") > max_context(m, art, 8 * GiB)


def test_max_context_with_experts_in_ram_on_8gb() -> None:
    m = model("qwen3-30b-a3b")
    art = gguf(m, "Q4_K_M")
    assert max_context(m, art, 8 * GiB) == 0
    assert max_context(m, art, 8 * GiB, experts_in_ram=True) >= 32768


@pytest.mark.slow
def test_estimate_within_10_percent_of_llamacpp(qwen_path, smollm_path, gemma_path) -> None:
    from appliance.bench.estimator_check import TOLERANCE, run_all, run_stress

    paths = {
        "qwen2.5-coder-0.5b-instruct": qwen_path,
        "smollm2-135m-instruct": smollm_path,
        "gemma-3-270m": gemma_path,
    }
    rows = run_all(paths) + run_stress(paths)
    assert len(rows) == 3 * 3 * 2 + 4
    for r in rows:
        label = (r.model, r.n_ctx, r.n_seq, r.flash_attn)
        assert abs(r.error) <= TOLERANCE, (label, r.error)
        assert r.est_kv == pytest.approx(r.measured_kv, abs=0.01 * MiB), label  # exact, up to log rounding
        assert r.est_compute == pytest.approx(r.measured_compute, rel=0.10), label
        assert r.est_model == pytest.approx(r.measured_model, rel=0.05), label
