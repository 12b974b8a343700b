#!/usr/bin/env bash
# Install a pinned torch into a venv from a local wheel folder, filling the folder first.
#
#   bash scripts/install-torch.sh VENV torch==X.Y.Z
#
# PyPI's torch is the CUDA-enabled build: with its CUDA libraries, several GB per release. pip's
# own cache does not keep these downloads on this project's machines, so every fresh venv would
# fetch them again. `pip download` into one folder (default ~/.cache/djl_python/wheels, or
# $DJL_WHEELS) fetches only what the folder lacks, and the install then reads the folder alone.
# The folder is shared by every Python: wheel names carry their Python tag, and the CUDA
# libraries' wheels are the same for all of them. Packages the venv already has (linked CUDA
# libraries, see compat-venv.sh) are not installed again.
set -euo pipefail
VENV=${1:?usage: install-torch.sh VENV torch==X.Y.Z}
PIN=${2:?usage: install-torch.sh VENV torch==X.Y.Z}
WHEELS=${DJL_WHEELS:-$HOME/.cache/djl_python/wheels}
mkdir -p "$WHEELS"
"$VENV/bin/pip" download -q -d "$WHEELS" "$PIN"
"$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" "$PIN"
