"""The estimator's MoE split (experts of the first N layers in RAM) against llama.cpp.

Two checks, because no real MoE model fits this box's tests:
- full size: Qwen3-30B-A3B Q4_K_M. The synthetic writer's tensor plan uses llama.cpp's Q4_K_M type
  choices (its total is the real file's size to 0.04%), so the bytes of the experts of layers
  0..N-1 and of what stays on the GPU are known exactly; the estimator's figures are set beside them.
- loaded: a tiny synthetic qwen3moe GGUF loaded by the real llama.cpp with --n-cpu-moe N. On this
  CPU-only build every buffer is host memory, so the comparison is with the tensors llama.cpp's load
  log says it overrode (their sizes from the tensor table; the log rounds to whole MiB).

    python -m appliance.bench.estimator_check --moe [--markdown]
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from appliance.bench.synthetic_moe import QWEN3_30B_A3B, TINY, expert_layer_bytes, tensors, write_moe_gguf
from quantization.catalog import load_catalog
from quantization.estimator import MiB, estimate
from quantization.gguf_header import read_header
from quantization.gguf_spec import spec_from_header

FULL_N = (0, 1, 6, 12, 24, 36, 47, 48)
N_CTX = 32768


@dataclass
class Row:
    model: str
    n_cpu_moe: int
    n_layers: int
    real_ram: int  # bytes of the experts of layers 0..N-1
    est_ram: int
    real_gpu_weights: int  # the other weights, less the token embeddings (host memory on GPU builds)
    est_gpu_weights: int
    moved_tensors: int | None = None  # loaded check: tensors llama.cpp reported overriding

    @property
    def ram_error(self) -> float:
        return self.est_ram / self.real_ram - 1 if self.real_ram else 0.0

    @property
    def gpu_error(self) -> float:
        return self.est_gpu_weights / self.real_gpu_weights - 1


def full_size() -> list[Row]:
    """Qwen3-30B-A3B Q4_K_M at each N, from the tensor plan (no file is written)."""
    model = load_catalog().get("qwen3-30b-a3b")
    assert model is not None
    art = model.artifact("Q4_K_M")
    assert art is not None
    vocab = model.arch.vocab_size
    plan = tensors(QWEN3_30B_A3B, vocab)
    return _rows(model.name, plan, expert_layer_bytes(QWEN3_30B_A3B, vocab), FULL_N,
                 lambda n: estimate(model, art, N_CTX, n_cpu_moe=n))


def loaded(tokenizer_from: Path) -> list[Row]:
    """The tiny model written, loaded by llama.cpp at each N, the moved tensors counted."""
    from runtimes.llamacpp.model import Model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny-qwen3moe.gguf"
        write_moe_gguf(path, TINY, tokenizer_from)
        header = read_header(path)
        spec = spec_from_header(header, name="tiny-qwen3moe", file=path.name, size_bytes=path.stat().st_size)
        vocab = len(header.metadata["tokenizer.ggml.tokens"])
        plan = tensors(TINY, vocab)
        sizes = {t.name: t.nbytes for t in plan}
        rows = _rows(spec.name, plan, expert_layer_bytes(TINY, vocab), range(TINY.n_layers + 1),
                     lambda n: estimate(spec, spec.artifacts[0], 512, n_cpu_moe=n))
        for row in rows:
            model = Model(path, n_cpu_moe=row.n_cpu_moe)
            try:
                moved = model.load_report.overridden
            finally:
                model.close()
            if sum(sizes[name] for name in moved) != row.real_ram:
                raise AssertionError(f"llama.cpp moved {sorted(moved)} for N={row.n_cpu_moe}")
            row.moved_tensors = len(moved)
    return rows


def _rows(name, plan, per_layer, ns, est) -> list[Row]:
    total = sum(t.nbytes for t in plan)
    embd = next(t.nbytes for t in plan if t.name == "token_embd.weight")
    out = []
    for n in ns:
        e = est(n)
        real_ram = sum(per_layer[:n])
        out.append(Row(name, n, len(per_layer), real_ram, e.weights_cpu_bytes, total - real_ram - embd,
                       e.weights_gpu_bytes))
    return out


HEADER = ["model", "N of M in RAM", "RAM real / est (MiB)", "RAM error", "GPU weights real / est (MiB)",
          "GPU error", "tensors llama.cpp moved"]


def _cells(r: Row) -> list[str]:
    return [r.model, f"{r.n_cpu_moe} / {r.n_layers}", f"{r.real_ram / MiB:.1f} / {r.est_ram / MiB:.1f}",
            f"{r.ram_error:+.1%}" if r.real_ram else "-",
            f"{r.real_gpu_weights / MiB:.1f} / {r.est_gpu_weights / MiB:.1f}", f"{r.gpu_error:+.1%}",
            "-" if r.moved_tensors is None else str(r.moved_tensors)]


def table(rows: list[Row], markdown: bool) -> str:
    cells = [HEADER, *(_cells(r) for r in rows)]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(HEADER)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells[1:]])
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells)


def main(tokenizer_from: Path, markdown: bool) -> int:
    print(f"Qwen3-30B-A3B Q4_K_M at {N_CTX} context, tensor bytes from llama.cpp's Q4_K_M type rules:\n")
    print(table(full_size(), markdown))
    print(f"\nTiny synthetic qwen3moe ({TINY.n_layers} layers, {TINY.n_experts} experts of {TINY.expert_ff}, "
          f"hidden {TINY.hidden}) loaded by llama.cpp with --n-cpu-moe N:\n")
    print(table(loaded(tokenizer_from), markdown))
    return 0
