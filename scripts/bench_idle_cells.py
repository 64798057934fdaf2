"""What another slot's idle cache costs a cold prefill in a unified KV cache.

llama.cpp attends over every cell up to the highest one in use, whoever owns it. This
times one cold prefill of an OpenCode prompt with the context as the engine creates it
(unified, 2 sequences), first empty, then with another sequence holding STALE cells, and
the same two with per-sequence KV streams (llama-server's default) for comparison. Why the
scheduler parks idle caches before a long prefill (CacheManager._park_idle).

    .venv/bin/python scripts/bench_idle_cells.py [--tokens 6000] [--stale 8000] [--model NAME]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "tests" / "fixtures" / "traces" / "opencode-fixcalc" / "req02.json"


def one(gguf: Path, unified: bool, stale: int, n_tokens: int) -> float:
    """Seconds for the cold prefill, in this process (one context per process)."""
    import llama_cpp as lc

    from runtimes.llamacpp import model as m

    model = m.Model(gguf)
    create = lc.llama_init_from_model

    def with_kv_mode(mparams, cparams):
        cparams.kv_unified = unified
        return create(mparams, cparams)

    m.lc.llama_init_from_model = with_kv_mode  # the only difference between the two modes
    ctx = m.Context(model, m.ContextParams(n_ctx=16384, n_seq=2, n_threads=2))
    ctx.warmup()
    messages = json.loads(TRACE.read_text())["messages"]
    text = "\n".join(str(msg.get("content")) for msg in messages) * 3
    tokens = model.tokenize(text)[:n_tokens]
    batch = m.Batch(2048, 2)

    def prefill(seq: int, toks: list[int]) -> None:
        for i in range(0, len(toks), 2048):
            chunk = toks[i : i + 2048]
            batch.clear()
            batch.add(chunk, i, seq, i + len(chunk) == len(toks))
            if batch.decode(ctx) != 0:
                raise SystemExit("llama_decode failed")

    if stale:
        prefill(1, tokens[::-1][:stale])  # another conversation, idle in the other slot
    t0 = time.perf_counter()
    prefill(0, tokens)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--tokens", type=int, default=6000)
    ap.add_argument("--stale", type=int, default=8000)
    ap.add_argument("--one", nargs=2, metavar=("MODE", "STALE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    # The GGUF's path (fetched first if missing).
    fetch = [sys.executable, "-m", "appliance.cli", "fetch", args.model]
    out = subprocess.run(fetch, capture_output=True, text=True, check=True, cwd=REPO)
    gguf = Path(out.stdout.split()[-1])
    if args.one:
        print(one(gguf, args.one[0] == "unified", int(args.one[1]), args.tokens))
        return 0
    print(f"cold prefill of {args.tokens} tokens, {args.model}, 2 threads; other slot idle with N cells")
    print("| KV | idle cells in the other slot | prefill s | tok/s |")
    print("|---|---:|---:|---:|")
    for mode in ("unified", "per-sequence"):
        for stale in (0, args.stale):
            cmd = [sys.executable, __file__, "--tokens", str(args.tokens), "--model", args.model]
            out = subprocess.run([*cmd, "--one", mode, str(stale)], capture_output=True, text=True, cwd=REPO)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-2000:])
            s = float(out.stdout.strip().splitlines()[-1])
            print(f"| {mode} | {stale} | {s:.2f} | {args.tokens / s:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
