# The two commands of the quick start: `make serve` and `make test`.
# Everything else here is what those two need on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# GPU builds of llama.cpp: CUDA where nvcc or nvidia-smi is present, Metal on macOS.
UNAME_S := $(shell uname -s)
ifeq ($(UNAME_S),Darwin)
  CMAKE_ARGS ?= -DGGML_METAL=on
else ifneq ($(shell command -v nvidia-smi 2>/dev/null),)
  CMAKE_ARGS ?= -DGGML_CUDA=on
endif
export CMAKE_ARGS

# The real OpenCode client for the end-to-end test, and what its tools need (ripgrep).
TOOLS := .tools
OPENCODE := $(TOOLS)/opencode/node_modules/.bin/opencode
OPENCODE_CONFIG := $(TOOLS)/opencode-config/opencode

.PHONY: install tools serve test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@if [ -n "$$CMAKE_ARGS" ]; then echo "building llama-cpp-python with CMAKE_ARGS=$$CMAKE_ARGS"; \
	  $(BIN)/pip install --no-cache-dir --force-reinstall --no-deps llama-cpp-python==0.3.36 ; fi
	$(BIN)/pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/appliance serve

$(OPENCODE):
	npm install --prefix $(TOOLS)/opencode --no-audit --no-fund opencode-ai@1.18.33
	mkdir -p $(OPENCODE_CONFIG)
	npm install --prefix $(OPENCODE_CONFIG) --no-audit --no-fund @opencode-ai/plugin@1.18.33

tools: $(OPENCODE)
	@command -v rg >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq ripgrep); } || echo "warning: ripgrep missing"

test: $(STAMP) tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(TOOLS) build *.egg-info
