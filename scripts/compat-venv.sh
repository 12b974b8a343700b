#!/usr/bin/env bash
# Compatibility runs for the Neuron stack: the DJL entry point, the Neuron backend (over the
# transformers-neuronx double), the configuration and the artifacts must import and pass their
# tests in the Python the LMI Neuron images ship, with their transformers:
#
#   LMI 0.26, 0.27 (inf2)   Python 3.9     serving/docker/pytorch-inf2.Dockerfile, ARG python_version
#   LMI 0.28, 0.29 (inf2)   Python 3.10
#   transformers-neuronx 0.13 requires transformers<4.48, so both runs use transformers 4.47.
#
#   bash scripts/compat-venv.sh 3.10           # create/refresh .venv-compat-3.10, then test
#   bash scripts/compat-venv.sh 3.9 -x -k foo  # extra arguments go to pytest
#
# The interpreter comes from pyenv (`pyenv versions`), else from PATH (python3.9); a machine with
# neither fails here, naming the version: a compatibility run is never skipped silently.
#
# torch: 2.8.0 is the newest release with wheels for Python 3.9, so both runs use it. uv (from
# the main venv, which `make test` builds first) installs everything: its cache hard-links the
# unpacked wheels into each venv, so torch and its CUDA libraries (about 3 GB) are unpacked once
# per machine and take disk once.
set -euo pipefail
cd "$(dirname "$0")/.."

PYVER=${1:?usage: compat-venv.sh 3.9|3.10 [pytest args]}
shift
VENV=.venv-compat-$PYVER
TRANSFORMERS_PIN=${TRANSFORMERS_PIN:-transformers==4.47.1}
TORCH_PIN=torch==2.8.0
UV=${UV:-.venv/bin/uv}
export UV_NATIVE_TLS=1 UV_PYTHON_DOWNLOADS=never
case "$PYVER" in
    3.9|3.10) ;;
    *) echo "compat-venv.sh: no compatibility run for Python $PYVER (3.9 or 3.10)" >&2; exit 2 ;;
esac
[ -x "$UV" ] || { echo "compat-venv.sh: $UV is missing; run make install first" >&2; exit 1; }

find_python() {
    local root candidate
    if command -v pyenv >/dev/null 2>&1; then
        root=$(pyenv root)
        for candidate in $(ls -d "$root"/versions/"$PYVER".* 2>/dev/null | sort -V -r); do
            [ -x "$candidate/bin/python$PYVER" ] && { echo "$candidate/bin/python$PYVER"; return; }
        done
    fi
    command -v "python$PYVER" && return
    echo "compat-venv.sh: no Python $PYVER on this machine (pyenv versions, or python$PYVER on PATH);" \
         "the LMI Neuron images run it, so this run cannot be skipped" >&2
    exit 1
}

if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ] || [ "$0" -nt "$VENV/.installed" ]; then
    INTERPRETER=$(find_python)
    rm -rf "$VENV"
    "$UV" venv -q -p "$INTERPRETER" "$VENV"
    "$UV" pip install -q -p "$VENV/bin/python" "$TORCH_PIN" "$TRANSFORMERS_PIN" \
        "pydantic>=2.5,<3" "eval_type_backport; python_version < '3.10'" safetensors huggingface_hub boto3 \
        fastapi uvicorn prometheus-client tqdm numpy "llguidance>=1.3" jsonschema accelerate pytest pytest-timeout httpx "moto[server]" requests
    "$UV" pip install -q -p "$VENV/bin/python" --no-deps -e .
    touch "$VENV/.installed"
fi
"$VENV/bin/python" -c 'import sys, transformers, tokenizers, huggingface_hub, torch; print(
    f"compat run: Python {sys.version.split()[0]}, transformers {transformers.__version__}, "
    f"tokenizers {tokenizers.__version__}, huggingface_hub {huggingface_hub.__version__}, torch {torch.__version__}")'
# 3.10 runs the Neuron backend's whole suite (the TNX double, every release) with transformers
# 4.47; 3.9 runs what differs by Python: configuration, artifacts and the DJL path, whose launch
# tests serve through the Neuron backend over the double.
if [ "$PYVER" = "3.10" ]; then
    SUITES=(tests/neuron tests/config tests/artifacts tests/serving/test_djl_*.py)
else
    SUITES=(tests/config tests/artifacts tests/serving/test_djl_*.py)
fi
exec "$VENV/bin/python" -m pytest -q "${SUITES[@]}" "$@"
