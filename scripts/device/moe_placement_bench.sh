#!/usr/bin/env bash
# MoE placement on a CUDA machine (issue 14), with no network: write a GGUF with the exact tensor
# shapes and quant types of Qwen3-30B-A3B Q4_K_M (48 layers, 128 experts, 8 used, random weights;
# appliance/bench/synthetic_moe.py), then for a few N (experts of the first N layers in RAM) measure
# with our engine: VRAM predicted by the estimator vs used, prefill and decode tok/s; and with
# llama-bench (-ot, the same patterns --n-cpu-moe builds) when a llama-bench binary is given.
#
#   scripts/device/moe_placement_bench.sh TOKENIZER.gguf [/path/to/llama-bench]
#
# TOKENIZER.gguf: any GGUF with the Qwen tokenizer (151936 tokens), e.g. a tokenizer-only file
# made here beforehand and carried along; only its tokenizer.* keys are copied. Needs a CUDA build
# of llama-cpp-python in .venv and ~18 GB of disk.
# Environment: OUT (default ./bench-results/moe-placement), NS (default "0 8 16 24 32 48"),
# N_CTX (32768), MODEL (reuse an already written GGUF).
set -euo pipefail

TOKENIZER=${1:?usage: $0 TOKENIZER.gguf [/path/to/llama-bench]}
LLAMA_BENCH=${2:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
OUT=${OUT:-$ROOT/bench-results/moe-placement}
NS=${NS:-"0 8 16 24 32 48"}
N_CTX=${N_CTX:-32768}
MODEL=${MODEL:-$OUT/qwen3-30b-a3b-synthetic-Q4_K_M.gguf}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv | tee "$OUT/gpu.txt"

if [ ! -f "$MODEL" ]; then
  (cd "$ROOT" && "$PY" -m appliance.bench.synthetic_moe "$MODEL" --tokenizer-from "$TOKENIZER" --shape qwen3-30b-a3b)
fi

: > "$OUT/engine.jsonl"
for n in $NS; do
  (cd "$ROOT" && "$PY" scripts/device/moe_placement_bench.py "$MODEL" "$n" --n-ctx "$N_CTX") | tee -a "$OUT/engine.jsonl"
done

if [ -n "$LLAMA_BENCH" ]; then
  for n in $NS; do
    ot=()
    if [ "$n" -gt 0 ]; then
      pats=$(seq -s '|' 0 $((n - 1)))
      ot=(-ot "blk\\.($pats)\\.ffn_(up|down|gate)_exps=CPU")
    fi
    echo "== llama-bench, experts of $n layers in RAM"
    "$LLAMA_BENCH" -m "$MODEL" -ngl 99 -fa 1 -p 2048 -n 128 -r 3 "${ot[@]}" -o md | tee "$OUT/llama-bench-n$n.md"
  done
fi
