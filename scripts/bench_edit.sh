#!/usr/bin/env bash
# Issue 16's comparison in one command: the edit workload (a coding agent asks for a small change
# and wants the whole file back; appliance/bench/edits/) on
#   appliance-spec     appliance serve, APPLIANCE_SPEC=ngram (our speculative decoding)
#   appliance-nospec   appliance serve, APPLIANCE_SPEC=off
#   llama-server       no speculation (the baseline every ratio is divided by)
#   llama-server-TYPE  llama-server --spec-type TYPE, for each n-gram TYPE its --help lists
# same GGUF, threads, context and slots, all started by one `appliance bench` run that
# interleaves them request by request, REPEAT repetitions, medians. Prints the Markdown tables
# for BENCHMARKS.md, and the verdicts: appliance-spec <= 0.9x the fastest llama-server-TYPE,
# appliance-nospec <= 1.0x llama-server, appliance-spec's outputs identical to appliance-nospec's.
#
#   scripts/bench_edit.sh [/path/to/llama-server]
#
# Without a path, llama-server is built once from llama-cpp-python's vendored llama.cpp (the
# version in .venv, sdist from PyPI) with the project's CPU flags (scripts/llama_cmake_args.py)
# into build/llama-server-VERSION/ (git-ignored).
#
# Environment: THREADS (2), REPEAT (3), CTX (8192 per server, 1 slot each), MODEL (catalog name,
#   default qwen2.5-coder-0.5b-instruct), EDITS (comma list of case names or N, default all),
#   EDIT_MAX_TOKENS (4096), SPEC_TYPES (default: every ngram-* type of --spec-type in --help),
#   OUT (default ./bench-results/edit), QUIET_LOAD (start once the 1-minute load is below it, 1.0),
#   APPLIANCE_ARGS / LLAMA_ARGS (extra flags for every appliance / llama-server),
#   BASE_SRC (another checkout, e.g. `git worktree add /tmp/base HEAD~1`: also measured, as
#   appliance-base with speculation, so a change is compared with what it replaces in one run).
# Time: 3 + 5 servers x 10 requests of ~1-2k output tokens; on the 2-vCPU CPU box (~40 tok/s without
# speculation) about an hour per repetition, so REPEAT=3 takes ~2-3 h: run it on a quiet machine.
# A quick check that everything runs: EDITS=1 EDIT_MAX_TOKENS=32 REPEAT=1 SPEC_TYPES=ngram-mod.
# Both appliances run with --no-prefix-store: two servers on one data dir must not share a disk
# cache (their RAM prefix caches work as always).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
MODEL=${MODEL:-qwen2.5-coder-0.5b-instruct}
THREADS=${THREADS:-2}
REPEAT=${REPEAT:-3}
CTX=${CTX:-8192}
OUT=${OUT:-$ROOT/bench-results/edit}
mkdir -p "$OUT"

build_llama_server() {  # prints the path of a llama-server built from the vendored source
  local ver dir src
  ver=$("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)')
  dir=$ROOT/build/llama-server-$ver
  if [ ! -x "$dir/build/bin/llama-server" ]; then
    mkdir -p "$dir"
    [ -f "$dir/llama_cpp_python-$ver.tar.gz" ] ||
      "$PY" -m pip download -q --no-deps --no-binary :all: -d "$dir" "llama-cpp-python==$ver" >&2
    [ -d "$dir/llama_cpp_python-$ver" ] || tar -xzf "$dir/llama_cpp_python-$ver.tar.gz" -C "$dir"
    src=$dir/llama_cpp_python-$ver/vendor/llama.cpp
    # shellcheck disable=SC2046
    cmake -S "$src" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release $(python3 "$ROOT/scripts/llama_cmake_args.py") \
      -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF >&2
    cmake --build "$dir/build" --target llama-server -j "$(nproc)" >&2
  fi
  echo "$dir/build/bin/llama-server"
}

LLAMA_SERVER=${1:-$(build_llama_server)}
HELP=$("$LLAMA_SERVER" --help 2>&1 || true)
if ! grep -q -- '--spec-type' <<<"$HELP"; then
  echo "$LLAMA_SERVER does not accept --spec-type (too old a build?)" >&2; exit 1
fi
SPEC_TYPES=${SPEC_TYPES:-$(grep -- '--spec-type' <<<"$HELP" | head -1 | grep -o 'ngram-[a-z0-9-]*' | sort -u | tr '\n' ' ')}
echo "llama-server: $LLAMA_SERVER"
echo "n-gram spec types: $SPEC_TYPES"

GGUF=$("$PY" -m appliance.cli fetch "$MODEL" | tail -1)
echo "model: $GGUF"

limit=${QUIET_LOAD:-1.0}
for _ in $(seq 1 180); do  # a shared machine: start when the 1-minute load is low
  awk -v l="$limit" '{exit !($1 < l)}' /proc/loadavg && break
  echo "waiting for a quiet machine (load $(cut -d' ' -f1 /proc/loadavg) >= $limit)"; sleep 10
done

APPL="appliance,ctx=$CTX,slots=1,args=--small-model none --no-prefix-store ${APPLIANCE_ARGS:-}"
LS="llama-server,ctx=$CTX,slots=1${LLAMA_ARGS:+,args=$LLAMA_ARGS}"
launches=(
  --launch "appliance-spec=$APPL,spec=ngram,ref=appliance-nospec"
  --launch "appliance-nospec=$APPL,spec=off"
  --launch "llama-server=$LS"
)
for t in $SPEC_TYPES; do launches+=(--launch "llama-server-$t=$LS,spec=$t,ref=llama-server"); done
if [ -n "${BASE_SRC:-}" ]; then  # an earlier checkout, with speculation, for a before/after in one run
  launches+=(--launch "appliance-base=$APPL,spec=ngram,ref=appliance-nospec,env.PYTHONSAFEPATH=1,env.PYTHONPATH=$BASE_SRC")
fi

"$PY" -m appliance.bench.cli "${launches[@]}" --launch-model "$MODEL" --gguf "$GGUF" \
  --llama-server "$LLAMA_SERVER" --threads "$THREADS" --workload edit ${EDITS:+--edits "$EDITS"} \
  --edit-max-tokens "${EDIT_MAX_TOKENS:-4096}" --repeat "$REPEAT" --baseline llama-server \
  --out "$OUT" --start-timeout 900

RESULT=$(ls -t "$OUT"/bench-*.json | head -1)
echo; echo "## edit workload ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores): $RESULT"; echo
"$PY" -m appliance.bench.cli compare "$RESULT" --baseline llama-server --markdown
echo
"$PY" - "$RESULT" <<'EOF'
import sys

from appliance.bench import edit_report, results

rows = {r["target"]: r for r in edit_report.target_rows(results.load(sys.argv[1]), "llama-server")}
spec = {t: r["total_s"] for t, r in rows.items() if t.startswith("llama-server-") and r["total_s"]}
ours, off, base = rows.get("appliance-spec"), rows.get("appliance-nospec"), rows.get("llama-server")
if spec and ours and ours["total_s"]:
    best = min(spec, key=spec.get)
    ratio = ours["total_s"] / spec[best]
    print(f"- appliance-spec / fastest llama-server n-gram type ({best}): {ratio:.2f}x "
          f"(target <= 0.9: {'met' if ratio <= 0.9 else 'MISSED'})")
if off and base and off["total_s"] and base["total_s"]:
    ratio = off["total_s"] / base["total_s"]
    print(f"- appliance-nospec / llama-server: {ratio:.2f}x (target <= 1.0: {'met' if ratio <= 1.0 else 'MISSED'})")
if ours and ours["reference"]:
    same = ours["identical"] == ours["compared"] and not ours["errors"]
    print(f"- appliance-spec outputs identical to {ours['reference']}: {ours['identical']}/{ours['compared']} "
          f"requests in every repetition ({'met' if same else 'MISSED'})")
for t, r in rows.items():
    if t.startswith("llama-server-") and r["reference"]:
        print(f"- {t} outputs identical to {r['reference']}: {r['identical']}/{r['compared']} requests")
EOF
