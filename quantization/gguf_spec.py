"""A catalog `ModelSpec` from a GGUF header, so the planner and estimator size an imported
file exactly as they size a catalog model.

The numbers are the ones llama.cpp itself loads from the file (`{arch}.block_count`,
`{arch}.attention.head_count_kv`, ...), so nothing is guessed that the engine does not also
use. The tool-call format needs the runtimes layer, which this layer may not import: the
caller detects it from `header.chat_template` and passes it in.
"""

from __future__ import annotations

from typing import Any

from quantization.catalog import Architecture, Artifact, ModelSpec
from quantization.gguf_header import GgufHeader, NotGguf

# Of every N layers the last attends globally, the rest through the sliding window, where the
# file does not say (`{arch}.attention.sliding_window_pattern`): llama.cpp's own constants.
SWA_PATTERNS: dict[str, int] = {"gemma3": 6, "gemma2": 2, "cohere2": 4}
EXPERT_MARK = "_exps"  # llama.cpp's name for stacked routed-expert tensors: ffn_up_exps, ...
IMPORT_QUALITY = 0.0  # unknown: an import is served when pinned, never preferred over the catalog


def spec_from_header(
    header: GgufHeader,
    *,
    name: str,
    file: str,
    size_bytes: int,
    sha256: str | None = None,
    tool_call_format: str = "none",
) -> ModelSpec:
    """The ModelSpec of one GGUF file, with that file as its only artifact."""
    arch = header.architecture
    params, experts = _param_counts(header)
    n_experts, n_used = _experts(header)
    active = params - experts + (experts * n_used / n_experts if n_experts else 0)
    template = header.chat_template
    md = header.metadata
    return ModelSpec(
        name=name,
        display_name=_display_name(name, md.get("general.name")),
        family=arch,
        params_total=params,
        params_active=active,
        params_experts=experts,
        context_native=_required_int(header, "context_length"),
        license=str(md.get("general.license") or "unknown"),
        capabilities=_capabilities(template, tool_call_format),
        tool_call_format=tool_call_format,
        arch=architecture(header),
        artifacts=[
            Artifact(format="gguf", quant=header.quant, size_bytes=size_bytes, file=file, sha256=sha256)
        ],
        sources=[f"GGUF header of {file}"],
        quality=IMPORT_QUALITY,
        notes="imported GGUF: shape and context read from its header; quality unknown",
    )


def architecture(header: GgufHeader) -> Architecture:
    """The shape that sizes the KV cache and compute buffers."""
    n_heads = _required_int(header, "attention.head_count")
    n_kv = _layer_max(header.arch_key("attention.head_count_kv")) or n_heads
    hidden = _required_int(header, "embedding_length")
    head_dim = _layer_max(header.arch_key("attention.key_length")) or hidden // n_heads
    window = _layer_max(header.arch_key("attention.sliding_window")) or None
    n_experts, n_used = _experts(header)
    names = {t.name for t in header.tensors}
    return Architecture(
        n_layers=_required_int(header, "block_count"),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        hidden_size=hidden,
        vocab_size=_vocab_size(header),
        tie_word_embeddings="output.weight" not in names,
        sliding_window=window,
        sliding_window_pattern=_swa_pattern(header) if window else None,
        n_experts=n_experts or None,
        n_experts_used=n_used or None,
    )


def _param_counts(header: GgufHeader) -> tuple[int, int]:
    """All weights, and those in routed experts (read by a few experts per token only)."""
    total = sum(t.n_elements for t in header.tensors)
    experts = sum(t.n_elements for t in header.tensors if EXPERT_MARK in t.name)
    return total, experts


def _experts(header: GgufHeader) -> tuple[int, int]:
    n = int(header.arch_key("expert_count") or 0)
    used = int(header.arch_key("expert_used_count") or 0)
    return (n, used or n) if n else (0, 0)


def _vocab_size(header: GgufHeader) -> int:
    """`{arch}.vocab_size`, else the tokenizer's token count, else the embedding table's rows."""
    if size := header.arch_key("vocab_size"):
        return int(size)
    if tokens := header.metadata.get("tokenizer.ggml.tokens"):
        return len(tokens)
    embd = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    if embd is None or len(embd.shape) < 2:
        raise NotGguf("no vocabulary size: neither a vocab_size, a token list nor token_embd.weight")
    return embd.shape[1]


def _swa_pattern(header: GgufHeader) -> int | None:
    """The period N of "N-1 sliding layers then a global one": from the file, else llama.cpp's."""
    value = header.arch_key("attention.sliding_window_pattern")
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, list) and value:  # per layer: True = sliding window
        period = value.index(False) + 1 if False in value else None
        if period and all(v == (i % period < period - 1) for i, v in enumerate(value)):
            return period
        return None
    return SWA_PATTERNS.get(header.architecture)


def _display_name(name: str, general_name: object) -> str:
    """The name it is served under, which the user chose, then what the file calls itself."""
    if isinstance(general_name, str) and general_name.strip() and general_name.lower() != name.lower():
        return f"{name} ({general_name.strip()})"
    return name


def _capabilities(template: str | None, tool_call_format: str) -> list[Any]:
    if not template:
        return ["base"]
    caps = ["chat"]
    if tool_call_format != "none":
        caps.append("tools")
    if "<think>" in template:
        caps.append("thinking")
    return caps


def _layer_max(value: Any) -> int:
    """A per-model number, or the largest of a per-layer list (some architectures vary it)."""
    if isinstance(value, list):
        return max((int(v) for v in value), default=0)
    return int(value or 0)


def _required_int(header: GgufHeader, key: str) -> int:
    value = _layer_max(header.arch_key(key))
    if not value:
        raise NotGguf(f"the GGUF header has no {header.architecture}.{key}")
    return value
