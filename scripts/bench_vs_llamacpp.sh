#!/usr/bin/env bash
# Regenerate the appliance vs llama-server vs llama_cpp.server comparison in BENCHMARKS.md.
#
#   scripts/bench_vs_llamacpp.sh /path/to/llama-server [/path/to/llama-bench]
#
# llama-server and llama-bench are built by hand outside this repository (BENCHMARKS.md has
# the steps); this script only runs them. It starts the three servers on loopback with the
# same GGUF and the same threads, replays the captured OpenCode traces on all of them
# (llama-server with 2 slots), then runs the decode and 4-stream workloads (llama-server
# with 4 slots), interleaving the servers, and prints the Markdown tables.
#
# Environment:
#   THREADS (2), REPEAT (3), LCP_REPEAT (1, llama_cpp.server's trace replays), MODEL (catalog name, default qwen2.5-coder-0.5b-instruct),
#   OUT (results folder, default ./bench-results/vs-llamacpp, git-ignored),
#   QUIET_LOAD (start each phase once the 1-minute load average is below it, default 1.0),
#   APPLIANCE_ARGS / LLAMA_ARGS (extra flags for `appliance serve` / llama-server),
#   SKIP_APPLIANCE=1 (the two llama.cpp servers only), TRACES (default: tests/fixtures/traces/*),
#   PHASES (default "traces lcp streams tg": a subset reruns only those parts),
#   TRACE_WORKLOADS (default "trace,session,restart": the traces phase's workloads),
#   STREAM_PROMPTS (prompt sizes of the decode workload, default 128,1024,4096).
set -euo pipefail

LLAMA_SERVER=${1:?usage: $0 /path/to/llama-server [/path/to/llama-bench]}
LLAMA_BENCH=${2:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
MODEL=${MODEL:-qwen2.5-coder-0.5b-instruct}
THREADS=${THREADS:-2}
REPEAT=${REPEAT:-3}
OUT=${OUT:-$ROOT/bench-results/vs-llamacpp}
FIXTURES=$ROOT/tests/fixtures
TRACES=${TRACES:-"$FIXTURES/traces/opencode-fixcalc $FIXTURES/traces/opencode-interleaved"}
P_LLAMA=18180 P_LCP=18181 P_APPL=18182
mkdir -p "$OUT"
LOGS=$OUT/logs
mkdir -p "$LOGS"

GGUF=$("$PY" -m appliance.cli fetch "$MODEL" | tail -1)
echo "model: $GGUF"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap cleanup EXIT
trap 'exit 143' TERM INT

wait_ready() {  # URL NAME PID: poll /v1/models until it answers 200
  local url=$1 name=$2 pid=$3
  for _ in $(seq 1 900); do
    if curl -sf "$url/v1/models" | grep -q '"id"'; then echo "$name ready"; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "$name exited; see $LOGS/$name.log" >&2; return 1; fi
    sleep 1
  done
  echo "$name not ready after 900 s" >&2; return 1
}

wait_quiet() {  # a shared machine: start a phase when the 1-minute load is below QUIET_LOAD
  local limit=${QUIET_LOAD:-1.0}
  for _ in $(seq 1 180); do
    awk -v l="$limit" '{exit !($1 < l)}' /proc/loadavg && return 0
    echo "waiting for a quiet machine (load $(cut -d' ' -f1 /proc/loadavg) >= $limit)"; sleep 10
  done
  echo "machine still busy; measuring anyway (load $(cut -d' ' -f1 /proc/loadavg))"
}

start_llama_server() {  # SLOTS CTX
  # shellcheck disable=SC2086
  "$LLAMA_SERVER" -m "$GGUF" --host 127.0.0.1 --port $P_LLAMA -t "$THREADS" -tb "$THREADS" \
    -c "$2" -np "$1" --jinja --alias "$MODEL" ${LLAMA_ARGS:-} >"$LOGS/llama-server-np$1.log" 2>&1 &
  PIDS+=($!)
  wait_ready "http://127.0.0.1:$P_LLAMA" "llama-server-np$1" $!
}

# llama_cpp.server from the project's venv. Its model loader uses ggml's extra buffer types
# (weight repacking, and AMX where the build has it); this venv's AMX kernels crash on our
# Xeon VMs, so when the build reports AMX they are turned off, as the appliance engine does.
LCP_LAUNCH='
import runpy, sys
import llama_cpp.llama_cpp as lc
if b"AMX_INT8 = 1" in lc.llama_print_system_info():
    _default = lc.llama_model_default_params
    def _params():
        p = _default()
        p.use_extra_bufts = False
        return p
    lc.llama_model_default_params = _params
    print("llama_cpp.server: AMX build, extra buffer types off", file=sys.stderr)
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__")
'

start_others() {
  # llama_cpp.server keeps the previous prompt's KV (one sequence); context for the 7.6k-token turns.
  "$PY" -c "$LCP_LAUNCH" --model "$GGUF" --model_alias "$MODEL" --host 127.0.0.1 --port $P_LCP \
    --n_ctx 16384 --n_threads "$THREADS" --n_threads_batch "$THREADS" >"$LOGS/llama_cpp.server.log" 2>&1 &
  PIDS+=($!)
  wait_ready "http://127.0.0.1:$P_LCP" llama_cpp.server $!
}

# The appliance is (re)started by a generated launcher, so the `restart` workload can restart
# it between a session's first request and the next one (what survives a restart).
APPL_PIDFILE=$OUT/appliance.pid
start_appliance() {  # SLOTS CTX: the same number of slots as llama-server in this phase
  [ -z "${SKIP_APPLIANCE:-}" ] || return 0
  cat >"$OUT/appliance-launch.sh" <<EOF
#!/usr/bin/env bash
if [ -f "$APPL_PIDFILE" ]; then
  pid=\$(cat "$APPL_PIDFILE"); kill "\$pid" 2>/dev/null
  while kill -0 "\$pid" 2>/dev/null; do sleep 0.2; done
fi
nohup "$PY" -m appliance.cli serve --model "$MODEL" --port $P_APPL --threads "$THREADS" --slots "$1" \\
  --ctx "$2" --small-model none ${APPLIANCE_ARGS:-} >>"$LOGS/appliance-slots$1.log" 2>&1 &
echo \$! >"$APPL_PIDFILE"
EOF
  chmod +x "$OUT/appliance-launch.sh"
  "$OUT/appliance-launch.sh"
  wait_ready "http://127.0.0.1:$P_APPL" "appliance-slots$1" "$(cat "$APPL_PIDFILE")"
}
stop_appliance() {
  [ -f "$APPL_PIDFILE" ] || return 0
  local pid; pid=$(cat "$APPL_PIDFILE"); kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  rm -f "$APPL_PIDFILE"
}
trap 'cleanup; stop_appliance' EXIT

T_LLAMA="--target llama-server=http://127.0.0.1:$P_LLAMA,model=$MODEL"
T_LCP="--target llama_cpp.server=http://127.0.0.1:$P_LCP,model=$MODEL"
T_APPL="--target appliance=http://127.0.0.1:$P_APPL,model=$MODEL,restart=$OUT/appliance-launch.sh"
[ -z "${SKIP_APPLIANCE:-}" ] || T_APPL=

bench() {  # OUTDIR REPEAT TARGETS ARGS...
  local dir=$1 repeat=$2 targets=$3; shift 3
  wait_quiet
  # shellcheck disable=SC2086
  "$PY" -m appliance.bench.cli $targets --repeat "$repeat" --out "$dir" --gguf "$GGUF" "$@"
}

# Phase 1: agent traces, llama-server and the appliance with 2 slots of 8k (an agent turn plus
# its title request); a new session with the same system prompt and tools after 4 other
# requests, and (appliance) after a restart. llama_cpp.server runs the traces LCP_REPEAT times
# (default 1: at ~6 min a replay, its 4x margin does not need a median of three).
PHASES=${PHASES:-traces lcp streams tg}
phase() { [[ " $PHASES " == *" $1 "* ]]; }
trace_args=()
for t in $TRACES; do trace_args+=(--trace "$t"); done
if phase traces; then
  start_appliance 2 16384
  start_llama_server 2 16384
  LLAMA_PID=$!
  bench "$OUT/traces" "$REPEAT" "$T_LLAMA $T_APPL" --workload "${TRACE_WORKLOADS:-trace,session,restart}" "${trace_args[@]}" \
    --trace-max-tokens 32
  kill "$LLAMA_PID" 2>/dev/null || true; wait "$LLAMA_PID" 2>/dev/null || true
fi
if phase lcp || phase streams; then start_others; fi
if phase lcp; then
  bench "$OUT/traces-lcp" "${LCP_REPEAT:-1}" "$T_LCP" --workload trace "${trace_args[@]}" --trace-max-tokens 32
fi

# Phase 2: decode speed and concurrency, llama-server (and the appliance) with 4 slots of 8k.
if phase streams; then
  stop_appliance
  start_appliance 4 32768
  start_llama_server 4 32768
  bench "$OUT/streams" "$REPEAT" "$T_LLAMA $T_LCP $T_APPL" --workload decode,concurrency \
    --prompt-sizes "${STREAM_PROMPTS:-128,1024,4096}" --max-tokens 128 --concurrency 1,4
fi
cleanup
stop_appliance

# llama.cpp's own numbers for the same model and threads (no HTTP): the one-stream ceiling.
if [ -n "$LLAMA_BENCH" ] && phase tg; then
  wait_quiet
  "$LLAMA_BENCH" -m "$GGUF" -t "$THREADS" -p 512 -n 128 -r 3 -o md | tee "$OUT/llama-bench.md"
fi

# The charts BENCHMARKS.md shows.
mkdir -p "$ROOT/docs/bench"
for p in traces streams; do
  png=$(ls -t "$OUT/$p"/bench-*.png 2>/dev/null | head -1)
  [ -z "$png" ] || cp "$png" "$ROOT/docs/bench/vs-llamacpp-$p.png"
done

echo; echo "## results ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
for p in traces traces-lcp streams; do
  f=$(ls -t "$OUT/$p"/bench-*.json 2>/dev/null | head -1)
  [ -n "$f" ] || continue
  base=llama-server; [ "$p" != traces-lcp ] || base=llama_cpp.server
  echo; echo "### $p: $f"; echo
  "$PY" -m appliance.bench.cli compare "$f" --baseline "$base" --markdown
done
