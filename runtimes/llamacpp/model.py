"""Load a GGUF model and one llama.cpp context holding every slot's sequence.

Thin, typed wrappers over llama-cpp-python's ctypes bindings. Everything here that
touches the context must run on the scheduler thread; vocabulary functions
(tokenize, detokenize, token pieces) are thread-safe in llama.cpp and may be
called from anywhere.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp as lc

log = logging.getLogger("appliance.llamacpp")

KV_TYPES = {"f16": lc.GGML_TYPE_F16, "q8_0": lc.GGML_TYPE_Q8_0, "q4_0": lc.GGML_TYPE_Q4_0}

_backend_lock = threading.Lock()
_backend_ready = False

# llama.cpp's log levels -> Python logging; INFO/DEBUG chatter is dropped.
_LEVELS = {3: logging.WARNING, 4: logging.ERROR}

# While a model loads, every llama.cpp log line (DEBUG included) is kept here, so the load can
# report where its tensors went: the C API has no other way to ask. One load at a time.
_load_lock = threading.Lock()
_load_lines: list[str] | None = None


@lc.llama_log_callback
def _log_callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    if not text:
        return
    lines = _load_lines
    if lines is not None:
        lines.append(text.decode("utf-8", "replace"))
    py_level = _LEVELS.get(level)
    if py_level is not None:
        log.log(py_level, "%s", text.decode("utf-8", "replace").rstrip())


def _init_backend() -> None:
    """Initialise ggml backends once per process, and route llama.cpp logs to logging."""
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            lc.llama_log_set(_log_callback, ctypes.c_void_p(0))
            lc.llama_backend_init()
            _backend_ready = True


@dataclass
class ContextParams:
    """What the context is created with; decided once at load time (by the planner)."""

    n_ctx: int
    n_seq: int = 1
    n_batch: int = 2048
    n_ubatch: int = 512
    n_threads: int | None = None
    n_threads_batch: int | None = None
    flash_attn: bool = True
    kv_type: str = "f16"
    swa_full: bool = False


def extra_buffers_default() -> bool:
    """Whether to let ggml repack weights into its extra CPU buffer types.

    Repacking speeds up CPU matmuls, but the extra types include AMX when the build has
    it, and this build's AMX kernels crash (SIGSEGV in ggml_backend_amx_mul_mat) on our
    Xeon machines. So: off when the build has AMX, unless APPLIANCE_LLAMA_EXTRA_BUFTS says.
    """
    env = os.environ.get("APPLIANCE_LLAMA_EXTRA_BUFTS")
    if env is not None:
        return env.strip().lower() not in ("", "0", "false", "no", "off")
    return b"AMX_INT8 = 1" not in lc.llama_print_system_info()


def gpu_offload() -> bool:
    """Whether this llama.cpp build can put layers on a GPU (CUDA, ROCm, Metal, ...)."""
    return bool(lc.llama_supports_gpu_offload())


def default_threads() -> int:
    """Physical-ish core count: llama.cpp decodes fastest with one thread per core."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, n)


# llama.cpp's own name pattern for routed-expert tensors (common.h LLM_FFN_EXPS_REGEX): separate
# gate/up/down, fused gate_up, and the "chexps" variant.
EXPERT_TENSORS = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"


def expert_override_patterns(n_cpu_moe: int) -> list[str]:
    r"""The tensor patterns `--n-cpu-moe N` installs (common/arg.cpp): one per layer 0..N-1, each
    `blk\.{i}` + EXPERT_TENSORS, searched (not fully matched) in tensor names; negative: every
    layer, with the bare pattern (`--cpu-moe`). `blk\.1\.` cannot match blk.11: the dot follows."""
    if n_cpu_moe < 0:
        return [EXPERT_TENSORS]
    return [rf"blk\.{i}{EXPERT_TENSORS}" for i in range(n_cpu_moe)]


class _BuftOverride(ctypes.Structure):
    """struct llama_model_tensor_buft_override (llama.h); the Python bindings do not declare it."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def _cpu_buffer_type() -> int:
    """ggml_backend_cpu_buffer_type(): llama.cpp compares an override's buffer type with this very
    pointer to put the tensor in host memory (with the CPU's extra, repacking types when allowed).
    Looked up through libllama's handle, whose dependencies (ggml-base) export it."""
    fn = ctypes.CFUNCTYPE(ctypes.c_void_p)(("ggml_backend_cpu_buffer_type", lc.llama_cpp._lib))
    buft = fn()
    if not buft:
        raise RuntimeError("ggml has no CPU buffer type")
    return buft


def _host_overrides(n_cpu_moe: int) -> ctypes.Array | None:
    """The NULL-terminated override array for `n_cpu_moe`, or None when there is nothing to move.
    The caller keeps it (and the pattern bytes it points to) alive as long as the model."""
    patterns = expert_override_patterns(n_cpu_moe)
    if not patterns:
        return None
    limit = lc.llama_max_tensor_buft_overrides()
    if len(patterns) >= limit:
        patterns = [EXPERT_TENSORS]  # every layer: one pattern says it
    buft = _cpu_buffer_type()
    items = [_BuftOverride(p.encode(), buft) for p in patterns]
    return (_BuftOverride * (len(items) + 1))(*items, _BuftOverride(None, None))


_OVERRIDDEN = re.compile(r"^tensor (\S+) \(.*\) buffer type overridden to (\S+)")
_MODEL_BUFFER = re.compile(r"^load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB")
_OFFLOADED = re.compile(r"^load_tensors: offloaded (\d+)/(\d+) layers to GPU")


@dataclass
class LoadReport:
    """Where llama.cpp put the weights, from its own load log."""

    overridden: dict[str, str] = field(default_factory=dict)  # tensor -> buffer type it was moved to
    model_buffers: dict[str, int] = field(default_factory=dict)  # buffer type -> bytes (logged in MiB)
    # (layers on the GPU, offloadable layers = blocks + output) as llama.cpp logs them; None when the
    # build has no GPU offload (it logs nothing then)
    offloaded: tuple[int, int] | None = None

    @classmethod
    def parse(cls, lines: list[str]) -> LoadReport:
        report = cls()
        for line in lines:
            line = line.strip()
            if hit := _OVERRIDDEN.match(line):
                report.overridden[hit.group(1)] = hit.group(2)
            elif hit := _MODEL_BUFFER.match(line):
                report.model_buffers[hit.group(1)] = round(float(hit.group(2)) * (1 << 20))
            elif hit := _OFFLOADED.match(line):
                report.offloaded = (int(hit.group(1)), int(hit.group(2)))
        return report


class Model:
    """A loaded GGUF model plus its vocabulary helpers."""

    def __init__(
        self,
        path: Path,
        *,
        n_gpu_layers: int = -1,
        n_cpu_moe: int = 0,
        use_mmap: bool = True,
        use_extra_bufts: bool | None = None,
    ):
        """n_gpu_layers: llama.cpp's -ngl (negative: all): k >= 1 puts the output layer and the last
        k - 1 blocks on the GPU, the first blocks and their KV stay in host memory; a build without
        GPU offload takes it and ignores it. n_cpu_moe: keep the routed experts of the first N layers
        in host memory (llama.cpp's --n-cpu-moe N; negative: all), whatever n_gpu_layers puts on the GPU."""
        global _load_lines
        _init_backend()
        if use_extra_bufts is None:
            use_extra_bufts = extra_buffers_default()
        self.path = Path(path)
        mparams = lc.llama_model_default_params()
        if n_gpu_layers < 0:
            n_gpu_layers = -1 if lc.llama_supports_gpu_offload() else 0
        mparams.n_gpu_layers = n_gpu_layers
        self.n_gpu_layers = n_gpu_layers  # as asked (-1: all); load_report.offloaded: as applied
        mparams.load_mode = lc.LLAMA_LOAD_MODE_MMAP if use_mmap else lc.LLAMA_LOAD_MODE_NONE
        mparams.use_extra_bufts = use_extra_bufts
        self.n_cpu_moe = n_cpu_moe
        # llama.cpp reads the patterns while loading; kept on self anyway, for the model's life.
        self._overrides = _host_overrides(n_cpu_moe)
        if self._overrides is not None:
            mparams.tensor_buft_overrides = ctypes.cast(self._overrides, ctypes.c_void_p)
        with _load_lock:
            _load_lines = lines = []
            try:
                ptr = lc.llama_model_load_from_file(str(self.path).encode(), mparams)
            finally:
                _load_lines = None
        if not ptr:
            raise RuntimeError(f"llama.cpp could not load {self.path}")
        self.load_report = LoadReport.parse(lines)
        self.ptr = ptr
        self.n_layers: int = lc.llama_model_n_layer(ptr)
        self.vocab = lc.llama_model_get_vocab(ptr)
        self.n_vocab: int = lc.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train: int = lc.llama_model_n_ctx_train(ptr)
        self.n_swa: int = lc.llama_model_n_swa(ptr)
        self.metadata: dict[str, str] = self._read_metadata()
        self.bos_id: int = lc.llama_vocab_bos(self.vocab)
        self.eos_id: int = lc.llama_vocab_eos(self.vocab)
        self._piece_buf = threading.local()

    # -- metadata ---------------------------------------------------------------------------
    def _read_metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        buf = ctypes.create_string_buffer(4096)

        def read(fn, i: int) -> str:
            nonlocal buf
            n = fn(self.ptr, i, buf, len(buf))
            if n >= len(buf):
                buf = ctypes.create_string_buffer(n + 1)
                n = fn(self.ptr, i, buf, len(buf))
            return buf.raw[: max(n, 0)].decode("utf-8", "replace")

        for i in range(lc.llama_model_meta_count(self.ptr)):
            key = read(lc.llama_model_meta_key_by_index, i)
            out[key] = read(lc.llama_model_meta_val_str_by_index, i)
        return out

    # -- vocabulary -------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        arr = (lc.llama_token * cap)()
        n = lc.llama_tokenize(self.vocab, data, len(data), arr, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            arr = (lc.llama_token * cap)()
            n = lc.llama_tokenize(self.vocab, data, len(data), arr, cap, add_special, parse_special)
        if n < 0:
            raise ValueError("tokenization failed")
        return arr[:n]

    def detokenize(self, tokens: list[int], *, special: bool = False) -> str:
        if not tokens:
            return ""
        arr = (lc.llama_token * len(tokens))(*tokens)
        cap = len(tokens) * 8 + 16
        buf = ctypes.create_string_buffer(cap)
        n = lc.llama_detokenize(self.vocab, arr, len(tokens), buf, cap, False, special)
        if n < 0:
            cap = -n
            buf = ctypes.create_string_buffer(cap)
            n = lc.llama_detokenize(self.vocab, arr, len(tokens), buf, cap, False, special)
        return buf.raw[:n].decode("utf-8", "replace")

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The raw bytes of one token (may be part of a multi-byte character)."""
        buf = getattr(self._piece_buf, "buf", None)
        if buf is None:
            buf = self._piece_buf.buf = ctypes.create_string_buffer(256)
        n = lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = lc.llama_token_to_piece(self.vocab, token, big, len(big), 0, special)
            return big.raw[:n]
        return buf.raw[:n]

    @property
    def kv_rollback(self) -> bool:
        """Whether a sequence's last positions can be removed from the cache (not from a
        recurrent state): speculative decoding takes back rejected drafts that way."""
        return not (lc.llama_model_is_recurrent(self.ptr) or lc.llama_model_is_hybrid(self.ptr))

    def is_eog(self, token: int) -> bool:
        return bool(lc.llama_vocab_is_eog(self.vocab, token))

    @functools.cached_property
    def eog_tokens(self) -> list[int]:
        """Every end-of-generation token (EOS, EOT, <|im_end|>, ...), found once."""
        return [t for t in range(self.n_vocab) if lc.llama_vocab_is_eog(self.vocab, t)]

    def token_text(self, token: int) -> str:
        """The vocabulary's text for a token (e.g. '<|im_end|>'), '' when there is none."""
        if token < 0:
            return ""
        raw = lc.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", "replace") if raw else ""

    @property
    def bos_text(self) -> str:
        return self.token_text(self.bos_id)

    @property
    def eos_text(self) -> str:
        return self.token_text(self.eos_id)

    @property
    def add_bos(self) -> bool:
        return bool(lc.llama_vocab_get_add_bos(self.vocab))

    @property
    def file_identity(self) -> str:
        """Stable id of the model file (name, size, mtime) for keying saved KV state."""
        st = self.path.stat()
        return f"{self.path.name}-{st.st_size}-{int(st.st_mtime)}"

    def close(self) -> None:
        if self.ptr:
            lc.llama_model_free(self.ptr)
            self.ptr = None


class Context:
    """One llama.cpp context: `n_seq` sequences over a unified KV cache of `n_ctx` cells.

    Unified means every sequence may use any cell, so one long agent prompt can use the
    whole context while other slots are idle, and prefix copies between sequences share
    cells instead of duplicating them.
    """

    def __init__(self, model: Model, p: ContextParams):
        cp = lc.llama_context_default_params()
        cp.n_ctx = p.n_ctx
        cp.n_batch = p.n_batch
        cp.n_ubatch = min(p.n_ubatch, p.n_batch)
        cp.n_seq_max = p.n_seq
        threads = p.n_threads or default_threads()
        cp.n_threads = threads
        cp.n_threads_batch = p.n_threads_batch or threads
        cp.flash_attn_type = (
            lc.LLAMA_FLASH_ATTN_TYPE_ENABLED if p.flash_attn else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        try:
            kv = KV_TYPES[p.kv_type]
        except KeyError:
            raise ValueError(f"kv_type must be one of {sorted(KV_TYPES)}, not {p.kv_type!r}") from None
        if p.kv_type != "f16" and not p.flash_attn:
            raise ValueError("a quantized KV cache needs flash attention (llama.cpp's V cache rule)")
        cp.type_k = kv
        cp.type_v = kv
        cp.kv_unified = True
        cp.swa_full = p.swa_full
        cp.no_perf = False
        ptr = lc.llama_init_from_model(model.ptr, cp)
        if not ptr:
            raise RuntimeError(
                f"llama.cpp could not create a context (n_ctx={p.n_ctx}, n_seq={p.n_seq}, kv={p.kv_type})"
            )
        self.ptr = ptr
        self.model = model
        self.mem = lc.llama_get_memory(ptr)
        self.n_ctx: int = lc.llama_n_ctx(ptr)
        self.n_batch: int = lc.llama_n_batch(ptr)
        self.n_ubatch: int = lc.llama_n_ubatch(ptr)
        self.n_seq: int = p.n_seq
        self.n_threads = threads

    def warmup(self, outputs: int = 1) -> None:
        """Decode one token and forget it: pages the weights in and builds the compute
        graph now, so the first request does not pay for it. With `outputs` > 1, then a step
        of that many logit rows, so llama.cpp's logits buffer is at its largest from the start."""
        tok = self.model.bos_id if self.model.bos_id >= 0 else 0
        lc.llama_set_warmup(self.ptr, True)
        try:
            b = Batch(1, 1)
            b.add([tok], 0, 0, True)
            b.decode(self)
        finally:
            lc.llama_set_warmup(self.ptr, False)
            self.seq_rm(0)
            lc.llama_synchronize(self.ptr)
        if outputs > 1:
            try:
                b = Batch(outputs, 1)
                b.add([tok] * outputs, 0, 0, True, all_logits=True)
                b.decode(self)
            finally:
                self.seq_rm(0)
                lc.llama_synchronize(self.ptr)

    # -- memory (KV) ------------------------------------------------------------------------
    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> bool:
        return bool(lc.llama_memory_seq_rm(self.mem, seq, p0, p1))

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        lc.llama_memory_seq_cp(self.mem, src, dst, p0, p1)

    def seq_pos_min(self, seq: int) -> int:
        return lc.llama_memory_seq_pos_min(self.mem, seq)

    def seq_pos_max(self, seq: int) -> int:
        return lc.llama_memory_seq_pos_max(self.mem, seq)

    def clear(self) -> None:
        lc.llama_memory_clear(self.mem, True)

    # -- sequence state (for the prefix store) ----------------------------------------------
    def seq_state_size(self, seq: int) -> int:
        return lc.llama_state_seq_get_size(self.ptr, seq)

    def seq_state(self, seq: int) -> bytes:
        size = lc.llama_state_seq_get_size(self.ptr, seq)
        buf = (ctypes.c_uint8 * size)()
        n = lc.llama_state_seq_get_data(self.ptr, buf, size, seq)
        return bytes(memoryview(buf)[:n])

    def set_seq_state(self, seq: int, data: bytes) -> bool:
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        return lc.llama_state_seq_set_data(self.ptr, buf, len(data), seq) > 0

    def close(self) -> None:
        if self.ptr:
            lc.llama_free(self.ptr)
            self.ptr = None


class Batch:
    """A reusable llama_batch over our own ctypes arrays, filled with slice assignments.

    Slice assignment copies in C, so building a 512-token prefill chunk costs a few
    microseconds of Python instead of a per-token loop.
    """

    def __init__(self, capacity: int, n_seq: int):
        self.capacity = capacity
        self.token = (lc.llama_token * capacity)()
        self.pos = (lc.llama_pos * capacity)()
        self.n_seq_id = (ctypes.c_int32 * capacity)(*([1] * capacity))
        self.seq_id = (ctypes.POINTER(lc.llama_seq_id) * capacity)()
        self.logits = (ctypes.c_int8 * capacity)()
        # One static one-element array per sequence id; seq_id[i] points at one of them.
        self._seq_arrays = [(lc.llama_seq_id * 1)(s) for s in range(n_seq)]
        self._seq_ptrs = [ctypes.cast(a, ctypes.POINTER(lc.llama_seq_id)) for a in self._seq_arrays]
        self.n = 0
        self.struct = lc.llama_batch(
            n_tokens=0,
            token=ctypes.cast(self.token, ctypes.POINTER(lc.llama_token)),
            embd=None,
            pos=ctypes.cast(self.pos, ctypes.POINTER(lc.llama_pos)),
            n_seq_id=ctypes.cast(self.n_seq_id, ctypes.POINTER(ctypes.c_int32)),
            seq_id=ctypes.cast(self.seq_id, ctypes.POINTER(ctypes.POINTER(lc.llama_seq_id))),
            logits=ctypes.cast(self.logits, ctypes.POINTER(ctypes.c_int8)),
        )

    def clear(self) -> None:
        self.n = 0

    def add(
        self, tokens: list[int], pos0: int, seq: int, last_logits: bool, *, all_logits: bool = False
    ) -> int:
        """Append a run of one sequence's tokens; returns the batch index of its last token.
        `all_logits`: every token gets a logits row (speculative decoding verifies each)."""
        k = len(tokens)
        a, b = self.n, self.n + k
        if b > self.capacity:
            raise ValueError("batch overflow")
        self.token[a:b] = tokens
        self.pos[a:b] = range(pos0, pos0 + k)
        self.seq_id[a:b] = [self._seq_ptrs[seq]] * k
        self.logits[a:b] = b"\x01" * k if all_logits else bytes(k)
        if last_logits:
            self.logits[b - 1] = 1
        self.n = b
        return b - 1

    def decode(self, ctx: Context) -> int:
        self.struct.n_tokens = self.n
        return lc.llama_decode(ctx.ptr, self.struct)
