"""How much memory a model needs at a given context, as llama.cpp allocates it.

The planner decides context length and slot count from this, so each term follows what
llama.cpp (the version vendored in llama-cpp-python 0.3.36) really allocates, checked
against its own logs by `appliance.bench.estimator_check`:

- weights: the file as-is (the mmapped model buffer). On GPU backends llama.cpp keeps the
  input token-embedding table in (mmapped, evictable) host memory, so untied models need
  that much less VRAM; the routed experts of the first N layers can stay in RAM (--n-cpu-moe N),
  each layer's share being the file's expert bytes / n_layers (Q4_K_M's Q6_K ffn_down in some
  layers makes the first layers ~5% heavier than that; `appliance.bench.estimator_moe` measures it).
  A partial offload (-ngl k, 0 <= k <= n_layers; llama_model_base::load_tensors) puts the output
  layer on the GPU for any k >= 1 and then the last k - 1 blocks; the first blocks stay in RAM,
  each block being (file - embedding tables) / n_layers; k = n_layers + 1 (or -1) is all of it.
- KV cache: per attention layer 2 x n_kv_heads x head_dim x cells, in the cache type's
  block layout. The context is padded to 256 cells; sliding-window layers only keep
  pad256(min(n_ctx, window x n_seq + n_ubatch)) cells (unified cache, swa_full off). Each layer's
  cache sits on its layer's device, so a partial offload keeps the first blocks' KV in RAM
  (sliding-window layers taken as spread evenly over the blocks).
- compute: the scheduler reserves one graph of min(n_ctx, n_ubatch) tokens with one output
  per token, so the peak is either the logits (vocab x tokens, f32) at the end of the
  graph or, mid-layer, the attention masks plus the attention/FFN intermediates (without
  flash attention the full KQ matrix n_kv x tokens x heads). Plus the logits output
  buffer (vocab x n_seq, f32).
- overhead: CUDA/ROCm context and pools, Metal's runtime; nothing for the CPU backend.
- margin: a fraction of the device total, for allocator slack and fragmentation.
"""

from __future__ import annotations

from pydantic import BaseModel

from quantization import formats
from quantization.catalog import Architecture, Artifact, ModelSpec
from quantization.formats import Backend

MiB = 1 << 20
GiB = 1 << 30
CTX_PAD = 256  # llama.cpp pads n_ctx (and the SWA cache) to a multiple of 256 cells
F32 = 4
MARGIN_FRACTION = 0.05
# Runtime memory outside llama.cpp's own buffers: CUDA context + cuBLAS workspace + the
# ggml CUDA memory pool (a few hundred MiB in practice); ROCm is a bit larger; Metal's
# command buffers and residency sets are small; the CPU backend allocates nothing extra.
BACKEND_OVERHEAD: dict[str, int] = {"cuda": 450 * MiB, "rocm": 512 * MiB, "metal": 160 * MiB, "cpu": 0}
# vLLM (torch + CUDA context + CUDA graphs + sampler), used for non-GGUF checkpoints.
VLLM_OVERHEAD = 1536 * MiB


class MemoryEstimate(BaseModel):
    """Bytes one loaded model needs. "gpu" means the compute device: VRAM on CUDA/ROCm,
    the Metal working set on a Mac, system RAM for the CPU backend; "cpu" is system RAM
    used besides the device (routed experts or, partly offloaded, whole blocks and their KV)."""

    weights_bytes: int  # all weights (the file)
    weights_gpu_bytes: int  # on the device (all of it unless experts or blocks are kept in RAM)
    weights_cpu_bytes: int  # routed experts (--n-cpu-moe N) or whole blocks (-ngl k) in system RAM
    kv_bytes: int  # all of the cache
    compute_bytes: int
    overhead_bytes: int  # CUDA context / Metal / runtime
    margin_bytes: int
    kv_cpu_bytes: int = 0  # the part of kv_bytes of the blocks left in RAM by a partial offload

    @property
    def gpu_bytes(self) -> int:
        device = self.weights_gpu_bytes + self.kv_bytes - self.kv_cpu_bytes + self.compute_bytes
        return device + self.overhead_bytes + self.margin_bytes

    @property
    def cpu_bytes(self) -> int:
        return self.weights_cpu_bytes + self.kv_cpu_bytes

    @property
    def total_bytes(self) -> int:
        return self.gpu_bytes + self.cpu_bytes

    @property
    def allocated_bytes(self) -> int:
        """What llama.cpp itself allocates (weights + KV + compute), without overhead or margin."""
        return self.weights_gpu_bytes + self.weights_cpu_bytes + self.kv_bytes + self.compute_bytes


def _pad(n: int, to: int = CTX_PAD) -> int:
    return -(-n // to) * to


def kv_cells(
    arch: Architecture,
    n_ctx: int,
    *,
    n_seq: int = 1,
    n_ubatch: int = 512,
    kv_unified: bool = True,
    swa_full: bool = False,
) -> tuple[int, int]:
    """(cells per full-attention layer, cells per sliding-window layer), all sequences together.

    A unified cache is one stream of n_ctx cells shared by the sequences; otherwise each
    of the n_seq streams holds pad256(n_ctx / n_seq) cells.
    """
    n_ctx = _pad(max(n_ctx, 1))
    streams = 1 if kv_unified else n_seq
    per_stream = n_ctx if kv_unified else _pad(n_ctx // n_seq)
    full = per_stream * streams
    if not arch.n_swa_layers or swa_full:
        return full, full
    window = arch.sliding_window or 0
    swa_stream = _pad(min(per_stream, window * (n_seq if kv_unified else 1) + n_ubatch))
    return full, swa_stream * streams


def kv_cache_bytes(
    arch: Architecture,
    n_ctx: int,
    kv_type: str = "f16",
    n_ubatch: int = 512,
    n_seq: int = 1,
    *,
    kv_unified: bool = True,
    swa_full: bool = False,
    type_v: str | None = None,
) -> int:
    """KV-cache bytes for `n_ctx` total cells (llama.cpp's cache; sequences share the cells)."""
    full, swa = kv_cells(
        arch, n_ctx, n_seq=n_seq, n_ubatch=n_ubatch, kv_unified=kv_unified, swa_full=swa_full
    )
    kt = formats.kv_type(kv_type)
    vt = formats.kv_type(type_v or kv_type)
    width = arch.n_kv_heads * arch.head_dim  # n_embd_k_gqa = n_embd_v_gqa
    per_cell = kt.row_bytes(width) + vt.row_bytes(width)
    n_swa = arch.n_swa_layers
    return per_cell * (full * (arch.n_layers - n_swa) + swa * n_swa)


def embedding_params(model: ModelSpec) -> float:
    """Token-embedding (+ untied LM head) parameters."""
    a = model.arch
    return a.vocab_size * a.hidden_size * (1 if a.tie_word_embeddings else 2)


def ffn_width(model: ModelSpec) -> int:
    """FFN intermediate width computed per token (n_ff; n_used x expert width for MoE).

    Taken from `arch.intermediate_size` when the catalog has it, else recovered from the
    active parameter count: what is left after embeddings and attention is 3 x hidden x n_ff
    per layer (gate, up, down).
    """
    a = model.arch
    explicit = getattr(a, "intermediate_size", None)
    if explicit:
        return int(explicit) * (a.n_experts_used or 1)
    attn = a.hidden_size * a.head_dim * (2 * a.n_heads + 2 * a.n_kv_heads)
    rest = model.params_active - embedding_params(model) - a.n_layers * attn
    return max(int(rest / (3 * a.hidden_size * a.n_layers)), 2 * a.hidden_size)


def compute_buffer_bytes(
    model: ModelSpec,
    n_ctx: int,
    *,
    n_seq: int = 1,
    n_batch: int = 2048,
    n_ubatch: int = 512,
    flash_attn: bool = True,
    kv_unified: bool = True,
    swa_full: bool = False,
) -> int:
    """llama.cpp's worst-case graph reservation plus the logits output buffer."""
    a = model.arch
    n_ctx_p = _pad(max(n_ctx, 1))
    t = min(n_ctx_p, n_batch, n_ubatch)  # tokens in the reserved ubatch, one output each
    h = a.hidden_size
    full, swa = kv_cells(a, n_ctx_p, n_seq=n_seq, n_ubatch=n_ubatch, kv_unified=kv_unified, swa_full=swa_full)
    has_swa = bool(a.n_swa_layers) and not swa_full
    mask_elem = 2 if flash_attn else F32  # flash attention takes an f16 mask
    masks = (full + (swa if has_swa else 0)) * t * mask_elem
    qkv = (a.n_heads + 2 * a.n_kv_heads) * a.head_dim * t * F32
    residual = 4 * h * t * F32  # residual stream, norm output and the layer's input/output
    if flash_attn:
        attn = qkv + a.n_heads * a.head_dim * t * F32  # q, k, v and the attention output
    else:
        n_kv = max(full if a.n_layers > a.n_swa_layers else 0, swa if has_swa else 0)
        attn = qkv + n_kv * t * a.n_heads * F32  # the materialized KQ (softmax runs in place)
    ffn = 3 * ffn_width(model) * t * F32  # gate, up and the activated product
    mid_layer = masks + max(attn, ffn) + residual
    end_of_graph = a.vocab_size * t * F32 + 2 * h * t * F32  # logits + final norm
    output_buffer = a.vocab_size * max(n_seq, 1) * F32
    return max(mid_layer, end_of_graph) + output_buffer


def weights_bytes(model: ModelSpec, artifact: Artifact) -> int:
    """The artifact's real size when known, else parameters x bits per weight."""
    if artifact.size_bytes:
        return artifact.size_bytes
    if artifact.format == "gguf":
        return int(model.params_total * formats.weight_bpw("gguf", artifact.quant) / 8)
    return formats.checkpoint_bytes(artifact.format, model.params_total, embedding_params(model))


def expert_bytes(model: ModelSpec, artifact: Artifact) -> int:
    """Bytes of all routed-expert tensors in the artifact (0 for a dense model)."""
    if not model.is_moe or not model.params_experts:
        return 0
    return int(weights_bytes(model, artifact) * model.params_experts / model.params_total)


def input_table_bytes(model: ModelSpec, artifact: Artifact) -> int:
    """The token-embedding table at the file's average bits per weight."""
    bpw = weights_bytes(model, artifact) * 8 / model.params_total
    return int(model.arch.vocab_size * model.arch.hidden_size * bpw / 8)


def output_bytes(model: ModelSpec, artifact: Artifact) -> int:
    """The output layer (lm_head, or the token embeddings it shares when tied): llama-quantize gives
    it at least Q6_K in the k-quant mixes, so never fewer bits than that."""
    bpw = max(weights_bytes(model, artifact) * 8 / model.params_total, formats.weight_bpw("gguf", "Q6_K"))
    return int(model.arch.vocab_size * model.arch.hidden_size * bpw / 8)


def block_bytes(model: ModelSpec, artifact: Artifact) -> int:
    """One repeating block's weights (attention, FFN or experts, norms), the file's average over its
    blocks once the tables are taken out: what each step of -ngl moves."""
    tables = output_bytes(model, artifact)
    if not model.arch.tie_word_embeddings:
        tables += input_table_bytes(model, artifact)
    return (weights_bytes(model, artifact) - tables) // model.arch.n_layers


def layer_split(model: ModelSpec, artifact: Artifact, n_gpu_layers: int) -> tuple[int, int, bool]:
    """(blocks on the GPU, blocks in RAM, output layer on the GPU) for llama.cpp's -ngl value: the
    output layer takes the first slot, then the last blocks; negative or > n_layers: everything."""
    n = model.arch.n_layers
    if n_gpu_layers < 0 or n_gpu_layers > n:
        return n, 0, True
    on_gpu = max(n_gpu_layers - 1, 0)
    return on_gpu, n - on_gpu, n_gpu_layers >= 1


def estimate(
    model: ModelSpec,
    artifact: Artifact,
    n_ctx: int,
    *,
    n_seq: int = 1,
    kv_type: str = "f16",
    backend: Backend = "cuda",
    n_batch: int = 2048,
    n_ubatch: int = 512,
    flash_attn: bool = True,
    experts_in_ram: bool = False,
    n_cpu_moe: int = 0,
    n_gpu_layers: int = -1,
    kv_unified: bool = True,
    swa_full: bool = False,
) -> MemoryEstimate:
    """Memory for serving `artifact` with `n_ctx` KV cells shared by `n_seq` sequences.

    GGUF artifacts are sized as llama.cpp allocates them; other formats (vLLM checkpoints)
    get weights + full KV + a rough activation and runtime allowance. On a GPU backend the
    routed experts of the first `n_cpu_moe` layers stay in system RAM (`experts_in_ram`: all), and
    `n_gpu_layers` (llama.cpp's -ngl; -1: all) leaves the first blocks and their KV there.
    """
    if formats.kv_type(kv_type).needs_flash_attn_for_v and not flash_attn:
        raise ValueError(f"a {kv_type} V cache needs flash attention in llama.cpp")
    if artifact.format != "gguf":
        return _estimate_vllm(model, artifact, n_ctx, n_seq=n_seq, kv_type=kv_type, n_batch=n_batch)

    w = weights_bytes(model, artifact)
    on_gpu = backend != "cpu"
    n_layers = model.arch.n_layers
    layers_in_ram = n_layers if experts_in_ram else min(max(n_cpu_moe, 0), n_layers)
    experts = expert_bytes(model, artifact) if on_gpu else 0
    w_cpu = experts * layers_in_ram // n_layers
    w_gpu = w - w_cpu
    if on_gpu and not model.arch.tie_word_embeddings:
        # the input embedding table stays in host memory (mmapped; get_rows runs on the CPU)
        w_gpu -= input_table_bytes(model, artifact)
    kv = kv_cache_bytes(
        model.arch, n_ctx, kv_type, n_ubatch, n_seq, kv_unified=kv_unified, swa_full=swa_full
    )
    compute = compute_buffer_bytes(
        model, n_ctx, n_seq=n_seq, n_batch=n_batch, n_ubatch=n_ubatch, flash_attn=flash_attn,
        kv_unified=kv_unified, swa_full=swa_full,
    )
    if w_cpu:
        # prompt batches copy one layer's experts to the GPU to run there (op offload)
        compute += experts // n_layers
    kv_cpu = 0
    gpu_blocks, ram_blocks, out_on_gpu = layer_split(model, artifact, n_gpu_layers if on_gpu else -1)
    if ram_blocks:
        if w_cpu:
            raise ValueError("a partial -ngl with --n-cpu-moe is not modelled")
        block, out = block_bytes(model, artifact), output_bytes(model, artifact)
        # the blocks in RAM, and the output layer when it stays there too (then read every token);
        # the untied input table stays mmapped in host memory either way, uncounted as above
        w_cpu = ram_blocks * block + (0 if out_on_gpu else out)
        w_gpu = gpu_blocks * block + (out if out_on_gpu else 0)
        kv_cpu = kv * ram_blocks // n_layers
        # prompt batches copy a RAM layer's weights to the GPU to run there (op offload)
        compute += max(block, 0 if out_on_gpu else out)
    overhead = BACKEND_OVERHEAD[backend]
    margin = int(MARGIN_FRACTION * (w_gpu + kv - kv_cpu + compute + overhead))
    return MemoryEstimate(
        weights_bytes=w,
        weights_gpu_bytes=w_gpu,
        weights_cpu_bytes=w_cpu,
        kv_bytes=kv,
        compute_bytes=compute,
        overhead_bytes=overhead,
        margin_bytes=margin,
        kv_cpu_bytes=kv_cpu,
    )


def _estimate_vllm(
    model: ModelSpec, artifact: Artifact, n_ctx: int, *, n_seq: int, kv_type: str, n_batch: int
) -> MemoryEstimate:
    """vLLM: weights + KV for n_ctx tokens (no SWA saving assumed) + activations + runtime."""
    a = model.arch
    w = weights_bytes(model, artifact)
    kv_name = "f16" if kv_type in ("f16", "bf16") else "q8_0"  # fp8 KV ~ 1 byte/elem
    kv = kv_cache_bytes(a, n_ctx, kv_name, n_batch, n_seq, swa_full=True)
    tokens = max(n_batch, 2048)  # max_num_batched_tokens in one forward pass
    compute = tokens * (2 * ffn_width(model) + 4 * a.hidden_size) * 2 + n_seq * a.vocab_size * F32
    margin = int(MARGIN_FRACTION * (w + kv + compute + VLLM_OVERHEAD))
    return MemoryEstimate(
        weights_bytes=w,
        weights_gpu_bytes=w,
        weights_cpu_bytes=0,
        kv_bytes=kv,
        compute_bytes=compute,
        overhead_bytes=VLLM_OVERHEAD,
        margin_bytes=margin,
    )


def max_context(model: ModelSpec, artifact: Artifact, budget_bytes: int, **kwargs) -> int:
    """Largest n_ctx (multiple of 256, at most the model's extended or native context)
    whose device bytes fit in `budget_bytes`; 0 when not even 256 cells fit.
    Keyword arguments are those of `estimate`."""
    limit = (model.context_extended or model.context_native) // CTX_PAD
    # device bytes grow with n_ctx, so bisect on the number of 256-cell blocks
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate(model, artifact, mid * CTX_PAD, **kwargs).gpu_bytes <= budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo * CTX_PAD
