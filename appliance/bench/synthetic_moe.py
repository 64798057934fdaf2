"""A synthetic qwen3moe GGUF: llama.cpp's real tensor names, shapes and quant types, random weights.

Why: the MoE placement (the routed experts of the first N layers in host memory) has to be checked
against what llama.cpp really loads, and no MoE model is small enough for CI. Tests write a tiny
one (`TINY`); `scripts/device/moe_placement_bench.sh` writes a full-size Qwen3-30B-A3B Q4_K_M
lookalike (`QWEN3_30B_A3B`) with the same code to measure speed and VRAM without an 18 GB download.

The tokenizer and chat template are copied from a real GGUF, so prompts tokenize as usual; the
vocabulary is that tokenizer's. Quantized blocks are random bytes with small fp16 scales, so
activations stay finite and greedy decoding is deterministic (the text is noise, by design).

    python -m appliance.bench.synthetic_moe OUT.gguf --tokenizer-from SOME.gguf [--shape qwen3-30b-a3b]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType
from gguf.quants import quant_shape_to_byte_shape

Q = GGMLQuantizationType
ARCH = "qwen3moe"


@dataclass(frozen=True)
class MoeShape:
    """The hyperparameters that fix every tensor's shape (Qwen3-MoE config.json names in comments)."""

    n_layers: int  # num_hidden_layers
    hidden: int  # hidden_size
    n_heads: int  # num_attention_heads
    n_kv_heads: int  # num_key_value_heads
    head_dim: int  # head_dim (explicit in Qwen3: not hidden / heads)
    n_experts: int  # num_experts
    n_experts_used: int  # num_experts_per_tok
    expert_ff: int  # moe_intermediate_size
    dense_ff: int  # intermediate_size (metadata only: every qwen3moe layer is MoE)
    context_length: int = 4096
    quant: str = "Q4_K_M"


# Rows are multiples of 256 so the k-quants apply, as they do in the real model.
TINY = MoeShape(
    n_layers=4, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64, n_experts=8, n_experts_used=2,
    expert_ff=256, dense_ff=512,
)
QWEN3_30B_A3B = MoeShape(
    n_layers=48, hidden=2048, n_heads=32, n_kv_heads=4, head_dim=128, n_experts=128, n_experts_used=8,
    expert_ff=768, dense_ff=6144, context_length=40960,
)
SHAPES = {"tiny": TINY, "qwen3-30b-a3b": QWEN3_30B_A3B}


def _more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits(): Q4_K_M gives these layers' attn_v / ffn_down Q6_K."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]  # numpy order: the row (ggml's ne0) last
    qtype: GGMLQuantizationType

    @property
    def nbytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.qtype]
        rows = int(np.prod(self.shape[:-1])) if len(self.shape) > 1 else 1
        return rows * self.shape[-1] // block * size


def tensors(s: MoeShape, vocab: int) -> list[TensorPlan]:
    """Every tensor llama.cpp's qwen3moe loader asks for, with Q4_K_M's type choices."""
    if s.quant != "Q4_K_M":
        raise ValueError(f"only Q4_K_M is modelled, not {s.quant}")
    h, q_dim, kv_dim = s.hidden, s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim
    out = [
        TensorPlan("token_embd.weight", (vocab, h), Q.Q4_K),
        TensorPlan("output_norm.weight", (h,), Q.F32),
        TensorPlan("output.weight", (vocab, h), Q.Q6_K),
    ]
    for i in range(s.n_layers):
        big = Q.Q6_K if _more_bits(i, s.n_layers) else Q.Q4_K
        b = f"blk.{i}."
        out += [
            TensorPlan(b + "attn_norm.weight", (h,), Q.F32),
            TensorPlan(b + "attn_q.weight", (q_dim, h), Q.Q4_K),
            TensorPlan(b + "attn_k.weight", (kv_dim, h), Q.Q4_K),
            TensorPlan(b + "attn_v.weight", (kv_dim, h), big),
            TensorPlan(b + "attn_output.weight", (h, q_dim), Q.Q4_K),
            TensorPlan(b + "attn_q_norm.weight", (s.head_dim,), Q.F32),
            TensorPlan(b + "attn_k_norm.weight", (s.head_dim,), Q.F32),
            TensorPlan(b + "ffn_norm.weight", (h,), Q.F32),
            TensorPlan(b + "ffn_gate_inp.weight", (s.n_experts, h), Q.F32),
            TensorPlan(b + "ffn_gate_exps.weight", (s.n_experts, s.expert_ff, h), Q.Q4_K),
            TensorPlan(b + "ffn_up_exps.weight", (s.n_experts, s.expert_ff, h), Q.Q4_K),
            TensorPlan(b + "ffn_down_exps.weight", (s.n_experts, h, s.expert_ff), big),
        ]
    return out


def expert_layer_bytes(s: MoeShape, vocab: int) -> list[int]:
    """Bytes of the routed-expert tensors per layer (what each --n-cpu-moe step moves to RAM)."""
    per = [0] * s.n_layers
    for t in tensors(s, vocab):
        if "_exps." in t.name:
            per[int(t.name.split(".")[1])] += t.nbytes
    return per


# fp16 scale fields per block (byte offset, value) that keep random blocks' weights at a std of a
# few hundredths: Q4_K is d*sc*q - dmin*m (dmin = 7.5 d centres it), Q6_K d*scale*(q-32), Q8_0 d*q.
_SCALES: dict[GGMLQuantizationType, list[tuple[int, float]]] = {
    Q.Q4_K: [(0, 1e-4), (2, 7.5e-4)],
    Q.Q6_K: [(208, 4e-5)],
    Q.Q8_0: [(0, 2.5e-4)],
}


def _random_bytes(t: TensorPlan, rng: np.random.Generator) -> np.ndarray:
    """The tensor's bytes: unit norms, N(0, 0.02) floats (a wider router), random quant blocks."""
    byte_shape = quant_shape_to_byte_shape(t.shape, t.qtype)
    if t.qtype == Q.F32:
        if t.name.endswith("norm.weight"):
            vals = np.ones(t.shape, np.float32)
        else:
            vals = rng.normal(0, 0.5 if "gate_inp" in t.name else 0.02, t.shape).astype(np.float32)
        return vals.view(np.uint8).reshape(byte_shape)
    if t.qtype == Q.F16:
        return rng.normal(0, 0.02, t.shape).astype(np.float16).view(np.uint8).reshape(byte_shape)
    size = GGML_QUANT_SIZES[t.qtype][1]
    blocks = np.frombuffer(rng.bytes(t.nbytes), np.uint8).copy().reshape(-1, size)
    for offset, value in _SCALES[t.qtype]:
        blocks[:, offset : offset + 2] = np.frombuffer(np.float16(value).tobytes(), np.uint8)
    return blocks.reshape(byte_shape)


def _copy_tokenizer(w: GGUFWriter, source: Path) -> int:
    """Every tokenizer.* key of `source`; returns its vocabulary size."""
    reader = GGUFReader(source)
    vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        value = field.contents()
        if vtype == GGUFValueType.ARRAY:
            w.add_key_value(key, value, vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(key, value, vtype)
        if key == "tokenizer.ggml.tokens":
            vocab = len(value)
    if not vocab:
        raise ValueError(f"{source} has no tokenizer.ggml.tokens")
    return vocab


def _metadata(w: GGUFWriter, s: MoeShape, name: str) -> None:
    w.add_name(name)
    w.add_block_count(s.n_layers)
    w.add_context_length(s.context_length)
    w.add_embedding_length(s.hidden)
    w.add_feed_forward_length(s.dense_ff)
    w.add_head_count(s.n_heads)
    w.add_head_count_kv(s.n_kv_heads)
    w.add_key_length(s.head_dim)
    w.add_value_length(s.head_dim)
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_expert_count(s.n_experts)
    w.add_expert_used_count(s.n_experts_used)
    w.add_expert_feed_forward_length(s.expert_ff)
    w.add_file_type(LlamaFileType.MOSTLY_Q4_K_M)
    w.add_quantization_version(2)


def write_moe_gguf(path: Path, shape: MoeShape, tokenizer_from: Path, *, seed: int = 0) -> list[TensorPlan]:
    """Write the model to `path` tensor by tensor (a 30B-shaped file never sits in memory whole);
    returns what was written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w = GGUFWriter(path, ARCH)
    vocab = _copy_tokenizer(w, tokenizer_from)
    _metadata(w, shape, f"synthetic-{ARCH}-{shape.n_layers}L-{shape.n_experts}x{shape.expert_ff}")
    plan = tensors(shape, vocab)
    for t in plan:
        byte_shape = quant_shape_to_byte_shape(t.shape, t.qtype)
        w.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), t.nbytes, raw_dtype=t.qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for t in plan:
        w.write_tensor_data(_random_bytes(t, rng))
    w.close()
    return plan


def _iter_sizes(plan: list[TensorPlan]) -> Iterator[str]:
    total = sum(t.nbytes for t in plan)
    exps = sum(t.nbytes for t in plan if "_exps." in t.name)
    yield f"{len(plan)} tensors, {total / 2**30:.2f} GiB ({exps / 2**30:.2f} GiB routed experts)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--tokenizer-from", type=Path, required=True, help="a GGUF whose tokenizer to copy")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    plan = write_moe_gguf(args.out, SHAPES[args.shape], args.tokenizer_from, seed=args.seed)
    for line in _iter_sizes(plan):
        print(f"{args.out}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
