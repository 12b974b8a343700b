#!/usr/bin/env bash
# Compatibility check for the Neuron stack's transformers: everything outside the PyTorch
# backend must import and pass its tests with transformers 4.47.x (transformers-neuronx 0.13
# requires transformers<4.48) as well as with transformers 5 (the main .venv).
#
# Creates .venv-compat (separate, because 4.47.1 pins tokenizers<0.22 and huggingface_hub<1.0,
# which transformers 5 cannot use), installs this package with --no-deps plus its other
# dependencies, and runs the tests that do not need the PyTorch slot cache.
#
# torch and its CUDA libraries (about 5 GB) are not installed a second time: the compat venv
# sees the main venv's copies through a .pth file that points at a folder of links to them.
# That folder holds only torch's own files, so every other package resolves inside the compat
# venv, and pip counts the linked torch as installed. The main venv must exist (`make test`
# builds it first; `make test-compat` depends on it).
#
#   bash scripts/compat-venv.sh            # create/refresh the venv, then test
#   bash scripts/compat-venv.sh -x -k foo  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${COMPAT_VENV:-.venv-compat}
TRANSFORMERS_PIN=${TRANSFORMERS_PIN:-transformers==4.47.1}
MAIN_VENV=${MAIN_VENV:-.venv}
TORCH_PIN=torch==2.13.0  # same pin as the cpu extra, satisfied by the main venv's copy

link_main_torch() {
    local main_site compat_site shared
    main_site=$("$MAIN_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    compat_site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    shared="$PWD/$VENV/torch-from-main"
    rm -rf "$shared" && mkdir -p "$shared"
    local entry
    for entry in "$main_site"/*; do
        case "$(basename "$entry")" in
            torch|torch-*|torchgen|functorch|triton|triton-*|nvidia|nvidia_*|cuda|cuda_*)
                ln -s "$entry" "$shared/" ;;
        esac
    done
    [ -e "$shared/torch" ] || { echo "compat venv: no torch in $main_site (run make install-test)" >&2; exit 1; }
    echo "$shared" > "$compat_site/torch_from_main.pth"
}

if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ] || [ "$0" -nt "$VENV/.installed" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q -U pip
    link_main_torch
    "$VENV/bin/pip" install -q "$TORCH_PIN" "$TRANSFORMERS_PIN" \
        "pydantic>=2.5,<3" safetensors huggingface_hub boto3 fastapi uvicorn prometheus-client tqdm numpy \
        accelerate pytest pytest-timeout httpx "moto[server]" requests
    "$VENV/bin/pip" install -q --no-deps -e .
    touch "$VENV/.installed"
fi
"$VENV/bin/python" -c 'import transformers, tokenizers, huggingface_hub, torch; print(
    f"compat venv: transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
    f"huggingface_hub {huggingface_hub.__version__}, torch {torch.__version__}")'
exec "$VENV/bin/python" -m pytest -q tests/neuron tests/config tests/artifacts "$@"
