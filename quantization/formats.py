"""What a quantization format costs in memory, and which runtime can serve it where.

The planner needs bytes, not names: a GGUF type's bits per weight come from its block
layout (weights per block, bytes per block), a whole GGUF file mixes types (attention
and output tensors kept at higher precision), and vLLM checkpoints keep embeddings and
the LM head in 16 bits. Support rules encode the GPU generations each kernel needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Which engine serves a format (not `runtimes.base.Runtime`, the protocol of a loaded model).
RuntimeKind = Literal["llama.cpp", "vllm"]
Backend = Literal["cuda", "metal", "rocm", "cpu"]  # the compute backend a runtime runs on


@dataclass(frozen=True)
class GgufType:
    """One ggml tensor type: `block_weights` weights stored in `block_bytes` bytes."""

    name: str
    block_weights: int
    block_bytes: int

    @property
    def bpw(self) -> float:
        return self.block_bytes * 8 / self.block_weights

    def row_bytes(self, n: int) -> int:
        """Bytes of `n` consecutive elements (ggml stores whole blocks)."""
        return -(-n // self.block_weights) * self.block_bytes


# Block layouts from ggml's type traits (scales and mins included in block_bytes).
GGUF_TYPES: dict[str, GgufType] = {
    t.name: t
    for t in [
        GgufType("F32", 1, 4),
        GgufType("F16", 1, 2),
        GgufType("BF16", 1, 2),
        GgufType("Q8_0", 32, 34),
        GgufType("Q4_0", 32, 18),
        GgufType("Q4_1", 32, 20),
        GgufType("Q5_0", 32, 22),
        GgufType("Q5_1", 32, 24),
        GgufType("IQ4_NL", 32, 18),
        GgufType("Q2_K", 256, 84),
        GgufType("Q3_K", 256, 110),
        GgufType("Q4_K", 256, 144),
        GgufType("Q5_K", 256, 176),
        GgufType("Q6_K", 256, 210),
        GgufType("Q8_K", 256, 292),
        GgufType("IQ4_XS", 256, 136),
        GgufType("IQ3_S", 256, 110),
        GgufType("IQ3_XXS", 256, 98),
        GgufType("IQ2_S", 256, 82),
        GgufType("IQ2_XS", 256, 74),
        GgufType("IQ2_XXS", 256, 66),
        GgufType("IQ1_M", 256, 56),
        GgufType("IQ1_S", 256, 50),
    ]
}

# Effective bits per weight of whole GGUF files (llama.cpp's quantize presets), measured
# as file bytes * 8 / parameters on Llama-3.1-8B files. Small models with big vocabularies
# sit higher because their embeddings (often kept at Q6_K/Q8_0) weigh more.
GGUF_FILE_BPW: dict[str, float] = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.56,
    "Q5_K_M": 5.70,
    "Q5_K_S": 5.57,
    "Q5_1": 6.0,
    "Q5_0": 5.5,
    "Q4_K_M": 4.89,
    "Q4_K_S": 4.67,
    "Q4_1": 5.0,
    "Q4_0": 4.55,
    "IQ4_XS": 4.42,
    "IQ4_NL": 4.6,
    "Q3_K_L": 4.30,
    "Q3_K_M": 4.00,
    "Q3_K_S": 3.64,
    "IQ3_M": 3.66,
    "IQ3_XXS": 3.25,
    "Q2_K": 3.17,
    "IQ2_M": 2.93,
    "IQ2_XXS": 2.38,
}

# vLLM checkpoint formats: bits per weight of the *linear layers*; embeddings and the LM
# head stay 16-bit. int4 with group size 128: 4 bits + fp16 scale/128 + 4-bit zero/128.
INT4_GROUP = 128
CHECKPOINT_LINEAR_BPW: dict[str, float] = {
    "awq": 4 + 16 / INT4_GROUP + 4 / INT4_GROUP,  # 4.156
    "gptq": 4 + 16 / INT4_GROUP + 4 / INT4_GROUP,
    "fp8": 8.0,  # per-channel / per-tensor scales are negligible
    "bf16": 16.0,
}
EMBEDDING_BPW_16 = 16.0

# Which runtime serves which on-disk format.
RUNTIME_FORMATS: dict[RuntimeKind, frozenset[str]] = {
    "llama.cpp": frozenset({"gguf"}),
    "vllm": frozenset({"awq", "gptq", "fp8", "bf16"}),
}


@dataclass(frozen=True)
class KvType:
    """A KV-cache element type (llama.cpp --cache-type-k/-v)."""

    name: str
    block_elems: int
    block_bytes: int
    needs_flash_attn_for_v: bool = False  # a quantized V cache needs flash attention

    @property
    def bytes_per_elem(self) -> float:
        return self.block_bytes / self.block_elems

    def row_bytes(self, n: int) -> int:
        return -(-n // self.block_elems) * self.block_bytes


KV_TYPES: dict[str, KvType] = {
    k.name: k
    for k in [
        KvType("f32", 1, 4),
        KvType("f16", 1, 2),
        KvType("bf16", 1, 2),
        KvType("q8_0", 32, 34, True),
        KvType("q5_1", 32, 24, True),
        KvType("q5_0", 32, 22, True),
        KvType("q4_1", 32, 20, True),
        KvType("q4_0", 32, 18, True),
        KvType("iq4_nl", 32, 18, True),
    ]
}


def kv_type(name: str) -> KvType:
    try:
        return KV_TYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown KV cache type {name!r}; known: {', '.join(KV_TYPES)}") from None


def gguf_type(name: str) -> GgufType:
    try:
        return GGUF_TYPES[name.upper()]
    except KeyError:
        raise ValueError(f"unknown GGUF tensor type {name!r}") from None


def gguf_file_bpw(quant: str) -> float:
    """Effective bits per weight of a whole GGUF file of preset `quant` (Q4_K_M, ...)."""
    q = quant.upper()
    if q in GGUF_FILE_BPW:
        return GGUF_FILE_BPW[q]
    if q in GGUF_TYPES:  # a single-type file; a few tensors stay higher, so round up a bit
        return GGUF_TYPES[q].bpw + 0.05
    raise ValueError(f"unknown GGUF quantization {quant!r}")


def checkpoint_bytes(fmt: str, params_total: float, embedding_params: float) -> int:
    """Size of a vLLM checkpoint: quantized linear layers + 16-bit embeddings/LM head."""
    f = fmt.lower()
    if f not in CHECKPOINT_LINEAR_BPW:
        raise ValueError(f"not a vLLM checkpoint format: {fmt!r}")
    linear = max(params_total - embedding_params, 0.0)
    return int(linear * CHECKPOINT_LINEAR_BPW[f] / 8 + embedding_params * EMBEDDING_BPW_16 / 8)


def weight_bpw(fmt: str, quant: str) -> float:
    """Bits per weight averaged over all parameters (embeddings treated like the rest)."""
    f = fmt.lower()
    if f == "gguf":
        return gguf_file_bpw(quant)
    if f in CHECKPOINT_LINEAR_BPW:
        return CHECKPOINT_LINEAR_BPW[f]
    raise ValueError(f"unknown format {fmt!r}")


@dataclass(frozen=True)
class Support:
    """Whether a format runs on given hardware, how, and why (truthy when it runs)."""

    ok: bool
    mode: str  # "native", "w8a8", "weight-only", "fp16-fallback", "" when not ok
    reason: str

    def __bool__(self) -> bool:
        return self.ok


Capability = float | tuple[int, int] | None


def _cc(cc: Capability) -> float | None:
    if cc is None:
        return None
    if isinstance(cc, tuple):
        return cc[0] + cc[1] / 10
    return float(cc)


# vLLM kernel floors (compute capability): AWQ/GPTQ Marlin kernels need Ampere; the
# older AWQ kernel runs on Turing; GPTQ's exllama kernel runs from Pascal; FP8 W8A8
# (FP8 tensor cores) needs Ada/Hopper, while Ampere only gets FP8 weights via Marlin.
FP8_W8A8_MIN_CC = 8.9
MARLIN_MIN_CC = 8.0
AWQ_MIN_CC = 7.5
GPTQ_MIN_CC = 6.0
BF16_MIN_CC = 8.0
VLLM_MIN_CC = 7.0


def supported(
    fmt: str,
    runtime: RuntimeKind,
    compute_capability: Capability = None,
    backend: Backend | None = None,
) -> Support:
    """Can `runtime` serve `fmt` on this hardware? `compute_capability` is NVIDIA's
    (8.9 or (8, 9)); None means no NVIDIA GPU (then backend defaults to "cpu")."""
    f = fmt.lower()
    cc = _cc(compute_capability)
    be: Backend = backend or ("cuda" if cc is not None else "cpu")
    if f not in RUNTIME_FORMATS.get(runtime, frozenset()):
        return Support(False, "", f"{runtime} does not load {fmt} checkpoints")
    if runtime == "llama.cpp":
        return Support(True, "native", f"llama.cpp runs GGUF on {be}")
    # vLLM
    if be in ("metal",):
        return Support(False, "", "vLLM has no Metal backend")
    if be == "cpu":
        if f == "bf16":
            return Support(True, "native", "vLLM's CPU build runs BF16 checkpoints")
        return Support(False, "", f"{fmt} kernels need a GPU in vLLM")
    if be == "rocm":
        ok = f in ("bf16", "fp8", "gptq", "awq")
        return Support(ok, "native" if ok else "", "vLLM ROCm build (best effort)")
    if cc is None:
        return Support(False, "", "CUDA backend without a compute capability")
    if cc < VLLM_MIN_CC:
        return Support(False, "", f"vLLM needs compute capability >= {VLLM_MIN_CC}, have {cc}")
    if f == "fp8":
        if cc >= FP8_W8A8_MIN_CC:
            return Support(True, "w8a8", f"FP8 tensor cores (cc {cc} >= {FP8_W8A8_MIN_CC})")
        if cc >= MARLIN_MIN_CC:
            return Support(True, "weight-only", f"cc {cc}: no FP8 tensor cores, FP8 weights via Marlin")
        return Support(False, "", f"FP8 needs cc >= {MARLIN_MIN_CC}, have {cc}")
    if f == "awq":
        if cc >= AWQ_MIN_CC:
            mode = "native" if cc >= MARLIN_MIN_CC else "awq-kernel"
            return Support(True, mode, f"AWQ kernels need cc >= {AWQ_MIN_CC}")
        return Support(False, "", f"AWQ needs cc >= {AWQ_MIN_CC}, have {cc}")
    if f == "gptq":
        if cc >= GPTQ_MIN_CC:
            return Support(True, "native", f"GPTQ kernels need cc >= {GPTQ_MIN_CC}")
        return Support(False, "", f"GPTQ needs cc >= {GPTQ_MIN_CC}, have {cc}")
    # bf16
    if cc >= BF16_MIN_CC:
        return Support(True, "native", "bf16 tensor cores")
    return Support(True, "fp16-fallback", f"cc {cc} has no bf16: vLLM runs it as fp16")
