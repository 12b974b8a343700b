#!/usr/bin/env bash
# Point DJL's Python engine folder at djl_python, then start DJL Serving as the LMI image does.
set -euo pipefail
djl-engine-install --djl-version "${DJL_PYTHON_DJL_VERSION:-0.28.0}"
exec /usr/local/bin/dockerd-entrypoint.sh "$@"
