"""What one verified token costs: a k-token llama_decode at ~1.2k context, with every row's
logits (speculative verification) and with the last row's only (prefill), medians of 7.

Why: drafting.py's lengths (k_long, k_copy_max) come from where the per-token cost stops
falling on this machine; rerun this on another CPU or a GPU before changing them.

    .venv/bin/python scripts/bench_verify_cost.py [--model GGUF] [--threads 2] [--k 1,2,9,17,33,65,128,256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import llama_cpp as lc

from runtimes.llamacpp.model import Batch, Context, ContextParams, Model

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
POS = 1200  # the context a verify step sees in the edit workload's middle


def default_gguf() -> Path:
    from appliance.models.store import fetch
    from quantization.catalog import load_catalog

    model = load_catalog().get(DEFAULT_MODEL)
    assert model is not None
    return fetch(model, model.artifacts[0], log=lambda *_: None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help=f"GGUF file (default: {DEFAULT_MODEL})")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", default="1,2,9,17,33,65,128,256")
    args = ap.parse_args()
    model = Model(args.model or default_gguf(), n_gpu_layers=0)
    params = ContextParams(n_ctx=4096, n_seq=1, n_batch=2048, n_ubatch=512, n_threads=args.threads,
                           n_threads_batch=args.threads, flash_attn=True, kv_type="f16")
    ctx = Context(model, params)
    ctx.warmup()
    batch = Batch(2048, 1)
    toks = [1000 + i for i in range(POS + 600)]
    batch.clear()
    batch.add(toks[:POS], 0, 0, True)
    assert batch.decode(ctx) == 0
    mem = lc.llama_get_memory(ctx.ptr)

    def once(k: int, all_rows: bool) -> float:
        batch.clear()
        batch.add(toks[POS : POS + k], POS, 0, True, all_logits=all_rows)
        t = time.perf_counter()
        assert batch.decode(ctx) == 0
        dt = time.perf_counter() - t
        lc.llama_memory_seq_rm(mem, 0, POS, -1)
        return dt

    print("| k tokens | last row's logits: ms (ms/token) | every row's logits: ms (ms/token) |")
    print("|---:|---:|---:|")
    for k in (int(x) for x in args.k.split(",")):
        cells = []
        for all_rows in (False, True):
            med = statistics.median(once(k, all_rows) for _ in range(7))
            cells.append(f"{1000 * med:.1f} ({1000 * med / k:.2f})")
        print(f"| {k} | {cells[0]} | {cells[1]} |")
    ctx.close()
    model.close()


if __name__ == "__main__":
    main()
