#!/usr/bin/env bash
# The CPU kernels' tests against an AddressSanitizer + UBSan build of cpu_kernels.c, gemm.c and layer_stack.c:
# the same tests as the plain run (tests/backends/test_cpu_kernels.py, test_panel_linear.py, test_layer_stack.py),
# with the kernels and the backend's forward on the sanitized library, in a Python process with
# the ASan runtime preloaded (a sanitized shared library loads only there). Any out-of-bounds
# access or undefined behaviour aborts the run. Part of `make test`.
#
#   bash scripts/sanitized-kernels.sh            # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
refusal=$("$PY" -c 'from djl_python.backends.pytorch.native.cpu_kernels import host_refusal; print(host_refusal() or "")')
if [ -n "$refusal" ]; then
    echo "sanitized kernels: not run, this host cannot build the CPU kernels: $refusal"
    exit 0
fi
asan=$(${CC:-cc} -print-file-name=libasan.so)
if [ ! -e "$asan" ]; then
    echo "sanitized kernels: ${CC:-cc} has no ASan runtime (libasan.so); install the compiler's libasan" >&2
    exit 1
fi
echo "sanitized kernels: ASan + UBSan build, runtime $asan"
LD_PRELOAD="$asan" ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 DJL_TEST_SANITIZED_KERNELS=1 \
    exec "$PY" -m pytest -q -p no:cacheprovider tests/backends/test_cpu_kernels.py tests/backends/test_panel_linear.py tests/backends/test_layer_stack.py "$@"
