#!/usr/bin/env bash
# Build what a GPU machine without network needs to run vLLM behind the appliance, as two folders
# small enough to carry (the device tool sends at most 64 MiB per call):
#   .dev1/_C.so.xz      vLLM's CUDA kernels (56 MB): send it first, unpack it there to /tmp/v/_C.so
#   .dev2/              the rest of vLLM 0.26.0, the wheels it and the appliance import that the
#                       H200 image lacks, and SmolLM2-135M's config and tokenizer (weights are made there)
# then run scripts/device/run_vllm_bench.sh there. Both folders must be git-ignored (.git/info/exclude).
#
# Why these versions: vLLM 0.26.0 is the last release pinned to torch 2.11 (what the H200 image has,
# CUDA 13); newer ones want torch 2.13. Left out: FlashAttention 2 (Hopper runs FA3), the MoE kernels
# (dense model), the Rust frontend; FlashInfer is not carried, so the run sets VLLM_USE_FLASHINFER_SAMPLER=0.
# The wheel list is what importing vLLM's server, engine and GPU worker needed, found by trial on a
# Python 3.12 venv with the image's packages (BENCHMARKS.md, "vLLM forwarding overhead", H200).
#
# Usage: scripts/device/make_vllm_bundle.sh [HF_FOLDER]   (default: SmolLM2 as `appliance convert` made it)
set -euo pipefail
cd "$(dirname "$0")/../.."
HF=${1:-$(.venv/bin/python -c 'from appliance.paths import models_dir; print(models_dir())')/smollm2-135m-instruct/hf}
WHEELS="annotated_types==0.8.0 apache_tvm_ffi==0.1.11 cachetools==8.0.2 cbor2==6.3.0 fastapi==0.136.3
httptools==0.9.0 httpx2==2.16.2 jmespath==1.1.0 llguidance==1.6.1 model_hosting_container_standards==0.1.16
msgspec==0.23.0 openai==3.60.0 openai_harmony==0.0.8 opentelemetry_api==1.45.2 orjson==3.13.0
partial_json_parser==0.2.1.1.post7 prometheus_fastapi_instrumentator==8.1.0 pybase64==1.5.1 pydantic==2.14.4
pydantic_core==2.50.5 python_multipart==0.0.34 pyzmq==27.3.0 sniffio==1.3.1 starlette==1.10.0
typing_inspection==0.4.5 uvicorn==0.55.0 watchfiles==1.3.0 xgrammar==0.2.9"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
pip_get() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$@"
}
rm -rf .dev1 .dev2; mkdir -p .dev1 .dev2/wheels .dev2/hf
pip_get "$TMP" vllm==0.26.0
(cd "$TMP" && unzip -q vllm-0.26.0-*.whl && rm vllm-0.26.0-*.whl)
xz -9 -T0 -c "$TMP/vllm/_C_stable_libtorch.abi3.so" > .dev1/_C.so.xz
rm "$TMP/vllm/_C_stable_libtorch.abi3.so" "$TMP/vllm/_moe_C_stable_libtorch.abi3.so" "$TMP/vllm/vllm-rs" \
  "$TMP/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so"
(cd "$TMP" && tar -cf - vllm vllm-0.26.0.dist-info | xz -9 -T0 > "$OLDPWD/.dev2/vllm-rest.tar.xz")
# shellcheck disable=SC2086
pip_get .dev2/wheels $WHEELS
for f in config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja; do
  [ -f "$HF/$f" ] && cp "$HF/$f" .dev2/hf/
done
du -sh .dev1 .dev2
