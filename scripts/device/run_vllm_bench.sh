#!/usr/bin/env bash
# On the GPU machine (after make_vllm_bundle.sh here): install the carried vLLM and wheels into
# /tmp/site, make the model, and run scripts/bench_vllm_overhead.sh through the appliance.
#
# With the device tool, two calls within its 30 s warm window (each carries one folder):
#   1. carry [".dev1"]: mkdir -p /tmp/v && python3 -c "import lzma,shutil;
#      shutil.copyfileobj(lzma.open('.dev1/_C.so.xz'), open('/tmp/v/_C.so','wb'))"
#   2. carry [".dev2"]: REPEAT=20 bash scripts/device/run_vllm_bench.sh
# Results (the bench JSON, its table, the appliance's and vLLM's logs) land in $OUT.
# Timing on an H200: install ~15 s, model ~10 s, vLLM ready ~2 min (imports and torch.compile), the
# bench ~1.5 min at REPEAT=20. BENCH_TIMEOUT (s) bounds the whole bench.
set -uo pipefail
export VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
S=${SITE:-/tmp/site}
T0=$(date +%s); t() { echo "[$(($(date +%s) - T0))s] $*"; }
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader || true
python3 -c 'import torch,sys; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())'
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$S" \
  .dev2/wheels/*.whl 2>&1 | grep -v WARN
if [ ! -f "$S/vllm/_C_stable_libtorch.abi3.so" ]; then
  python3 -c "import tarfile; tarfile.open('.dev2/vllm-rest.tar.xz').extractall('$S')" || exit 1
  C=/tmp/v/_C.so
  if [ ! -f $C ]; then
    mkdir -p /tmp/v
    python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('.dev1/_C.so.xz'), open('$C','wb'))" || exit 1
  fi
  cp $C "$S/vllm/_C_stable_libtorch.abi3.so"
fi
export PYTHONPATH=$S:$PWD
t installed
python3 -c 'import vllm, vllm.platforms.cuda; from vllm.vllm_flash_attn import flash_attn_interface as f
print("vllm", vllm.__version__, "FA3", f.FA3_AVAILABLE, f.FA3_UNAVAILABLE_REASON)' 2>&1 | tail -3
[ -f /tmp/hf/model.safetensors ] || python3 scripts/device/mkmodel.py .dev2/hf /tmp/hf 2>&1 | grep -v Writing
t model
export APPLIANCE_VLLM_COMMAND="${VLLM_CMD:-python3 -m vllm.entrypoints.openai.api_server} ${VLLM_EXTRA:-}"
PY=python3 MODEL_DIR=/tmp/hf LOG_DIR=$OUT/logs timeout "${BENCH_TIMEOUT:-420}" \
  scripts/bench_vllm_overhead.sh "${REPEAT:-20}" 2>&1 | tee "$OUT/bench.txt"
t "bench done"
cp "$(ls -t bench-results/vllm-overhead/*.json | head -1)" "$OUT/"
