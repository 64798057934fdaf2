"""One MoE placement measurement on a CUDA machine (run by moe_placement_bench.sh, one N per process
so each load starts from an empty GPU): load GGUF with the experts of the first N layers in RAM in our
engine, and print one JSON line with predicted vs used VRAM, prefill and decode tok/s.

    python scripts/device/moe_placement_bench.py MODEL.gguf N [--n-ctx 32768]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from quantization.estimator import estimate  # noqa: E402
from quantization.gguf_header import read_header  # noqa: E402
from quantization.gguf_spec import spec_from_header  # noqa: E402
from runtimes.base import Sampling  # noqa: E402
from runtimes.llamacpp.engine import Engine, EngineConfig  # noqa: E402


def vram_used() -> int:
    """VRAM in use on GPU 0 (0 without nvidia-smi: a CPU smoke run of this script)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) << 20


async def timed(engine: Engine, prompt: list[int], n: int) -> tuple[float, float]:
    """(seconds to the first token, decode tok/s after it)."""
    t0 = time.perf_counter()
    first = None
    count = 0
    async for step in engine.generate(prompt, Sampling(temperature=0.0, max_tokens=n, ignore_eos=True)):
        count += len(step.token_ids)
        if first is None and step.token_ids:
            first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return first - t0, (count - 1) / (end - first)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf", type=Path)
    ap.add_argument("n_cpu_moe", type=int)
    ap.add_argument("--n-ctx", type=int, default=32768)
    ap.add_argument("--prompt", type=int, default=2048)
    ap.add_argument("--decode", type=int, default=128)
    args = ap.parse_args()
    header = read_header(args.gguf)
    size = args.gguf.stat().st_size
    spec = spec_from_header(header, name="synthetic", file=args.gguf.name, size_bytes=size)
    est = estimate(spec, spec.artifacts[0], args.n_ctx, n_seq=1, backend="cuda", n_cpu_moe=args.n_cpu_moe)
    before = vram_used()
    engine = Engine(EngineConfig(model_path=args.gguf, n_ctx=args.n_ctx, n_cpu_moe=args.n_cpu_moe))
    try:
        used = vram_used() - before
        prompt = (engine.tokenize("The river ran past the mill. ") * args.prompt)[: args.prompt]
        ttft, decode = asyncio.run(timed(engine, prompt, args.decode))
        moved = len(engine.model.load_report.overridden)
    finally:
        engine.close()
    print(json.dumps({
        "n_cpu_moe": args.n_cpu_moe, "tensors_moved": moved, "n_ctx": args.n_ctx,
        "vram_predicted_mib": round(est.gpu_bytes / 2**20),
        "vram_predicted_no_margin_mib": round((est.gpu_bytes - est.margin_bytes) / 2**20),
        "vram_used_mib": round(used / 2**20),
        "ram_experts_predicted_mib": round(est.weights_cpu_bytes / 2**20),
        "prefill_tok_s": round(args.prompt / ttft, 1), "decode_tok_s": round(decode, 1),
    }), flush=True)


if __name__ == "__main__":
    main()
