"""Quantization formats: bits per weight from block layouts, file mixes, runtime support."""

from __future__ import annotations

import pytest

from quantization.catalog import load_catalog
from quantization.formats import (
    CHECKPOINT_LINEAR_BPW,
    GGUF_FILE_BPW,
    checkpoint_bytes,
    gguf_file_bpw,
    gguf_type,
    kv_type,
    supported,
    weight_bpw,
)


@pytest.mark.parametrize(
    ("name", "bpw"),
    [
        ("Q4_0", 4.5), ("Q4_1", 5.0), ("Q5_0", 5.5), ("Q5_1", 6.0), ("Q8_0", 8.5),
        ("Q2_K", 2.625), ("Q3_K", 3.4375), ("Q4_K", 4.5), ("Q5_K", 5.5), ("Q6_K", 6.5625),
        ("IQ4_XS", 4.25), ("IQ4_NL", 4.5), ("F16", 16), ("BF16", 16), ("F32", 32),
    ],
)
def test_gguf_type_bits_per_weight(name: str, bpw: float) -> None:
    assert gguf_type(name).bpw == bpw
    assert gguf_type(name.lower()).bpw == bpw


def test_row_bytes_count_whole_blocks() -> None:
    assert gguf_type("Q4_K").row_bytes(4096) == 16 * 144
    assert gguf_type("Q8_0").row_bytes(33) == 2 * 34  # a partial block still costs a block


@pytest.mark.parametrize(
    ("quant", "lo", "hi"),
    [("Q4_K_M", 4.8, 5.0), ("Q5_K_M", 5.6, 5.8), ("Q3_K_M", 3.9, 4.1), ("Q6_K", 6.5, 6.7),
     ("Q8_0", 8.45, 8.55), ("Q4_1", 4.95, 5.1)],
)
def test_gguf_file_mixes_on_an_8b_model(quant: str, lo: float, hi: float) -> None:
    assert lo <= gguf_file_bpw(quant) <= hi


def test_file_mixes_are_ordered_and_above_their_base_type() -> None:
    order = ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16"]
    bpws = [gguf_file_bpw(q) for q in order]
    assert bpws == sorted(bpws)
    # a K-quant "M" file keeps attention/output tensors higher than its base type
    assert gguf_file_bpw("Q4_K_M") > gguf_type("Q4_K").bpw
    assert gguf_file_bpw("Q5_K_M") > gguf_type("Q5_K").bpw


def test_file_mixes_match_real_catalog_files() -> None:
    """Catalog GGUF sizes (exact bytes from the hub) of >= 7B models agree with the table."""
    checked = 0
    for model in load_catalog():
        if model.params_total < 7e9:
            continue  # small models carry relatively big embeddings kept at Q6_K/Q8_0
        for art in model.artifacts:
            if art.format == "gguf" and art.quant.upper() in GGUF_FILE_BPW:
                real = art.size_bytes * 8 / model.params_total
                assert real == pytest.approx(gguf_file_bpw(art.quant), rel=0.05), (model.name, art.quant)
                checked += 1
    assert checked >= 10


def test_awq_gptq_int4_bits() -> None:
    assert CHECKPOINT_LINEAR_BPW["awq"] == pytest.approx(4.16, abs=0.01)
    assert CHECKPOINT_LINEAR_BPW["gptq"] == CHECKPOINT_LINEAR_BPW["awq"]
    assert weight_bpw("fp8", "FP8") == 8 and weight_bpw("bf16", "BF16") == 16


def test_checkpoint_keeps_embeddings_16_bit() -> None:
    # 8B model, 1.05B embedding + head parameters
    size = checkpoint_bytes("awq", 8.03e9, 1.05e9)
    assert size == pytest.approx(6.98e9 * 4.156 / 8 + 1.05e9 * 2, rel=1e-3)
    assert checkpoint_bytes("awq", 8.03e9, 1.05e9) > checkpoint_bytes("awq", 8.03e9, 0)
    with pytest.raises(ValueError):
        checkpoint_bytes("gguf", 1e9, 0)


def test_kv_cache_types() -> None:
    assert kv_type("f16").bytes_per_elem == 2
    assert kv_type("q8_0").bytes_per_elem == 8.5 / 8
    assert kv_type("q4_0").bytes_per_elem == 4.5 / 8
    assert kv_type("q8_0").row_bytes(128) == 4 * 34
    with pytest.raises(ValueError):
        kv_type("q3_k")


def test_fp8_needs_ada_or_hopper_for_w8a8() -> None:
    ada = supported("fp8", "vllm", 8.9)
    assert ada and ada.mode == "w8a8"
    assert supported("fp8", "vllm", (9, 0)).mode == "w8a8"
    ampere = supported("fp8", "vllm", 8.6)
    assert ampere and ampere.mode == "weight-only"
    assert supported("fp8", "vllm", (8, 0)).mode == "weight-only"
    assert not supported("fp8", "vllm", 7.5)


def test_runtime_format_matrix() -> None:
    assert supported("gguf", "llama.cpp", 8.9)
    assert supported("gguf", "llama.cpp", None, "metal")
    assert supported("gguf", "llama.cpp")  # CPU
    assert not supported("gguf", "vllm", 8.9)
    for fmt in ("awq", "gptq", "fp8", "bf16"):
        assert not supported(fmt, "llama.cpp", 8.9)
        assert supported(fmt, "vllm", 8.9), fmt


def test_vllm_hardware_limits() -> None:
    assert not supported("awq", "vllm", None, "metal")
    assert not supported("awq", "vllm")  # CPU build: no int4 GPU kernels
    assert supported("bf16", "vllm")  # vLLM's CPU build serves BF16
    assert supported("awq", "vllm", 7.5) and not supported("awq", "vllm", 7.0)
    assert supported("bf16", "vllm", 7.5).mode == "fp16-fallback"
    assert not supported("bf16", "vllm", 6.1)
    assert "compute capability" in supported("gptq", "vllm", 6.1).reason
