"""Prove the memory estimator against what llama.cpp itself reports allocating.

Loads each real small model with llama-cpp-python at several context sizes and slot
counts (the settings our engine uses: flash attention, n_ubatch 512, f16 KV, unified
cache, swa_full off), parses llama.cpp's own buffer-size log lines and compares them
with `estimate(..., backend="cpu")`, term by term.

Each load runs in a child process (`--probe`), so llama.cpp's global log hook and its
memory never touch the caller.

    python -m appliance.bench.estimator_check [--markdown]
    python -m appliance.bench.estimator_check --moe [--markdown]   (the MoE split: estimator_moe.py)
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from quantization.catalog import ModelSpec, load_catalog
from quantization.estimator import MiB, estimate

REAL_MODELS = ("qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct", "gemma-3-270m")
SLOTS = (1, 4)
N_BATCH, N_UBATCH = 2048, 512
TOLERANCE = 0.10

_BUF = re.compile(r"^(load_tensors|llama_kv_cache|llama_context|sched_reserve):\s+(\S+)\s+"
                  r"(model|KV|output|compute) buffer size =\s+([\d.]+) MiB")


@dataclass
class Measured:
    """Buffer sizes llama.cpp logged, in bytes (logged in MiB with two decimals)."""

    model: dict[str, int] = field(default_factory=dict)  # buffer type -> bytes
    kv: int = 0
    output: int = 0
    compute: int = 0

    @property
    def total(self) -> int:
        return sum(self.model.values()) + self.kv + self.output + self.compute


def parse_log(text: str) -> Measured:
    m = Measured()
    for line in text.splitlines():
        hit = _BUF.match(line.strip())
        if not hit:
            continue
        _, buft, kind, mib = hit.groups()
        size = round(float(mib) * MiB)
        if kind == "model":
            m.model[buft] = m.model.get(buft, 0) + size
        elif kind == "KV":
            m.kv += size
        elif kind == "output":
            m.output += size
        else:
            m.compute += size
    return m


def _probe_child(args: argparse.Namespace) -> None:
    """Load model + context with the low-level API and let llama.cpp log to stderr."""
    import llama_cpp

    @llama_cpp.llama_log_callback
    def to_stderr(level, text, user_data):  # keep every line, whatever Python's logger says
        sys.stderr.write(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(to_stderr, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    mp = llama_cpp.llama_model_default_params()
    mp.use_extra_bufts = args.repack
    model = llama_cpp.llama_model_load_from_file(args.probe.encode(), mp)
    if not model:
        sys.exit("model load failed")
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx, cp.n_seq_max = args.n_ctx, args.n_seq
    cp.n_batch, cp.n_ubatch = args.n_batch, args.n_ubatch
    cp.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if args.flash_attn
                          else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    cp.kv_unified, cp.swa_full = True, False
    cp.n_threads = cp.n_threads_batch = 2
    ctx = llama_cpp.llama_init_from_model(model, cp)
    if not ctx:
        sys.exit("context creation failed")
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


def probe(path: Path, n_ctx: int, n_seq: int = 1, *, n_ubatch: int = N_UBATCH,
          flash_attn: bool = True, repack: bool = False) -> Measured:
    """What llama.cpp allocates for this model and context (weight repacking off by default:
    on the CPU it keeps a second, repacked copy of some weights; see `--markdown` notes)."""
    cmd = [sys.executable, "-m", "appliance.bench.estimator_check", "--probe", str(path),
           "--n-ctx", str(n_ctx), "--n-seq", str(n_seq), "--n-ubatch", str(n_ubatch)]
    cmd += [] if flash_attn else ["--no-flash-attn"]
    cmd += ["--repack"] if repack else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"llama.cpp probe failed ({res.returncode}): {res.stderr[-2000:]}")
    measured = parse_log(res.stderr)
    if not measured.model or not measured.compute:
        raise RuntimeError(f"no buffer sizes in llama.cpp's log: {res.stderr[-2000:]}")
    return measured


@dataclass
class Comparison:
    model: str
    quant: str
    n_ctx: int
    n_seq: int
    measured_model: int
    measured_kv: int
    measured_compute: int  # compute buffer + logits output buffer
    est_model: int
    est_kv: int
    est_compute: int
    est_with_margin: int
    flash_attn: bool = True

    @property
    def measured_total(self) -> int:
        return self.measured_model + self.measured_kv + self.measured_compute

    @property
    def est_total(self) -> int:
        return self.est_model + self.est_kv + self.est_compute

    @property
    def error(self) -> float:
        """Relative error of the estimated total (positive: estimate is larger)."""
        return self.est_total / self.measured_total - 1

    @property
    def ok(self) -> bool:
        return abs(self.error) <= TOLERANCE


def compare(model: ModelSpec, path: Path, n_ctx: int, n_seq: int, *, flash_attn: bool = True) -> Comparison:
    art = model.artifacts[0]
    m = probe(path, n_ctx, n_seq, flash_attn=flash_attn)
    e = estimate(model, art, n_ctx, n_seq=n_seq, backend="cpu", n_batch=N_BATCH, n_ubatch=N_UBATCH,
                 flash_attn=flash_attn)
    return Comparison(
        model=model.name, quant=art.quant, n_ctx=n_ctx, n_seq=n_seq,
        measured_model=sum(m.model.values()), measured_kv=m.kv, measured_compute=m.compute + m.output,
        est_model=e.weights_bytes, est_kv=e.kv_bytes, est_compute=e.compute_bytes,
        est_with_margin=e.total_bytes, flash_attn=flash_attn,
    )


def contexts_for(model: ModelSpec) -> tuple[int, int, int]:
    """2048, 8192 and 32768; or 2048, half and all of a shorter native context."""
    native = model.context_native
    return (2048, 8192, 32768) if native >= 32768 else (2048, native // 2, native)


def _model_and_path(name: str, paths: dict[str, Path] | None) -> tuple[ModelSpec, Path]:
    """The catalog entry and its GGUF file (given, or fetched and verified into the store)."""
    from appliance.models.store import fetch

    model = load_catalog().get(name)
    if model is None:
        raise KeyError(name)
    path = (paths or {}).get(name)
    if path is None:
        path = fetch(model, model.artifacts[0], log=lambda *a: print(*a, file=sys.stderr))
    return model, path


def run_all(paths: dict[str, Path] | None = None) -> list[Comparison]:
    """Compare every real small model at three contexts and 1 and 4 slots."""
    rows = []
    for name in REAL_MODELS:
        model, path = _model_and_path(name, paths)
        for n_ctx in contexts_for(model):
            for n_seq in SLOTS:
                rows.append(compare(model, path, n_ctx, n_seq))
    return rows


# Settings outside the engine's defaults where the compute peak moves from the logits to
# mid-layer: flash attention off (the full KQ matrix) and a context far beyond training.
STRESS_CASES = (
    ("smollm2-135m-instruct", 131072, 1, True),
    ("smollm2-135m-instruct", 8192, 4, False),
    ("qwen2.5-coder-0.5b-instruct", 32768, 1, False),
    ("gemma-3-270m", 32768, 4, False),
)


def run_stress(paths: dict[str, Path] | None = None) -> list[Comparison]:
    rows = []
    for name, n_ctx, n_seq, fa in STRESS_CASES:
        model, path = _model_and_path(name, paths)
        rows.append(compare(model, path, n_ctx, n_seq, flash_attn=fa))
    return rows


def repack_sizes(paths: dict[str, Path] | None = None) -> dict[str, dict[str, int]]:
    """Model buffers with llama.cpp's default CPU weight repacking on (informational)."""
    out = {}
    for name in REAL_MODELS:
        _, path = _model_and_path(name, paths)
        out[name] = probe(path, 2048, 1, repack=True).model
    return out


def _mib(b: int) -> str:
    return f"{b / MiB:.1f}"


HEADER = ["model", "quant", "n_ctx", "slots", "flash attn", "weights meas/est", "KV meas/est",
          "compute meas/est", "total meas", "total est", "error", "est + margin"]


def _cells(r: Comparison) -> list[str]:
    return [r.model, r.quant, str(r.n_ctx), str(r.n_seq), "on" if r.flash_attn else "off",
            f"{_mib(r.measured_model)} / {_mib(r.est_model)}",
            f"{_mib(r.measured_kv)} / {_mib(r.est_kv)}",
            f"{_mib(r.measured_compute)} / {_mib(r.est_compute)}",
            _mib(r.measured_total), _mib(r.est_total), f"{r.error:+.1%}", _mib(r.est_with_margin)]


def markdown(rows: list[Comparison]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def text_table(rows: list[Comparison]) -> str:
    table = [HEADER, *(_cells(r) for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        ram = f", {psutil.virtual_memory().total / (1 << 30):.0f} GiB RAM"
    except ImportError:
        ram = ""
    return f"{cpu}, {os.cpu_count()} cores{ram}, {platform.system()} {platform.release()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="print the BENCHMARKS.md table")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--moe", action="store_true", help="the MoE VRAM/RAM split instead (issue 14)")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    ap.add_argument("--n-ctx", type=int, default=2048, help=argparse.SUPPRESS)
    ap.add_argument("--n-seq", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--n-batch", type=int, default=N_BATCH, help=argparse.SUPPRESS)
    ap.add_argument("--n-ubatch", type=int, default=N_UBATCH, help=argparse.SUPPRESS)
    ap.add_argument("--no-flash-attn", dest="flash_attn", action="store_false", help=argparse.SUPPRESS)
    ap.add_argument("--repack", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        _probe_child(args)
        return 0
    if args.moe:
        from appliance.bench import estimator_moe

        _, smollm = _model_and_path("smollm2-135m-instruct", None)  # its tokenizer
        return estimator_moe.main(smollm, args.markdown)
    rows = run_all()
    if args.json:
        print(json.dumps([asdict(r) | {"error": r.error} for r in rows + run_stress()], indent=2))
    elif args.markdown:
        import llama_cpp

        print(f"Measured {dt.date.today().isoformat()} on {machine()}, llama-cpp-python "
              f"{llama_cpp.__version__}, flash attention on, n_batch {N_BATCH}, n_ubatch {N_UBATCH}, "
              "f16 KV, unified KV cache, swa_full off. MiB; \"est\" excludes the 5% margin.\n")
        print(markdown(rows))
        stress = run_stress()
        print("\nOutside the engine's settings (flash attention off, or 128k cells on an 8k model), "
              "where the compute peak is mid-layer rather than at the logits:\n")
        print(markdown(stress))
        repack = repack_sizes()
        notes = ", ".join(
            f"{name} {' + '.join(f'{k} {_mib(v)}' for k, v in bufs.items())} MiB"
            for name, bufs in repack.items())
        print(f"\nWith llama.cpp's default CPU weight repacking on, the model buffers are: {notes}.")
    else:
        print(text_table(rows))
    worst = max(rows, key=lambda r: abs(r.error))
    verdict = "met" if all(r.ok for r in rows) else "MISSED"
    print(f"\nworst total error {worst.error:+.1%} ({worst.model}, n_ctx {worst.n_ctx}, "
          f"{worst.n_seq} slots); target within {TOLERANCE:.0%}: {verdict}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
