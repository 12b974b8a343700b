"""oneDNN's shape caches are bounded: memory does not grow with the variety of prompt lengths.

Each new (rows, weight) shape compiles a primitive that oneDNN and torch's ideep layer each
cache, up to 1024 of them by default. The test runs in a fresh interpreter (the capacities are
read once, at the first primitive) and feeds packed linear layers 400 distinct row counts, in two rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from djl_python.backends.pytorch.cpu_policy import SHAPE_CACHE_CAPACITY, SHAPE_CACHE_VARIABLES, bound_shape_caches

PROBE = """
import json, sys, torch
from djl_python.backends.pytorch.cpu_policy import bound_shape_caches
if sys.argv[1] == "bounded":
    bound_shape_caches()
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
torch.set_num_threads(1)
if not torch.backends.mkldnn.is_available():
    print(json.dumps(None)); sys.exit()
weights = [torch.randn(n, k) for n, k in [(576, 576), (1536, 576), (576, 1536)]]
packed = [torch.ops.mkldnn._reorder_linear_weight(w, 16) for w in weights]
x = torch.randn(1, 576)
torch.ops.mkldnn._linear_pointwise(x, packed[0], None, "none", [], "")
start = rss()
growth = []
for first in (66, 64):  # two interleaved sets of row counts: new shapes of the same sizes
    for rows in range(first, first + 800, 4):
        for w, p in zip(weights, packed):
            torch.ops.mkldnn._linear_pointwise(torch.randn(rows, w.shape[1]), p, None, "none", [], "")
    growth.append(rss() - start)
print(json.dumps(growth))
"""


def _growth(mode: str) -> list[float] | None:
    env = {k: v for k, v in os.environ.items() if k not in SHAPE_CACHE_VARIABLES}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bounded_caches_stop_growing_and_hold_far_less_than_the_defaults():
    """Two rounds of 600 new shapes of the same sizes (MB of RSS growth after each): with the
    bound the second round adds little (evicted primitives' memory is reused); with the
    defaults memory keeps growing, to several times as much."""
    bounded, default = _growth("bounded"), _growth("default")
    if bounded is None or default is None:
        pytest.fail("this torch has no oneDNN: the CPU backend's packed path cannot run here")
    assert bounded[1] < 1.6 * bounded[0] + 30, bounded  # a plateau, give or take the allocator
    assert default[1] > 1.6 * default[0] and default[1] > 3 * bounded[1], (default, bounded)


def test_a_users_setting_wins_and_the_step_is_idempotent():
    env = {"LRU_CACHE_CAPACITY": "4096"}
    assert bound_shape_caches(env) == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(SHAPE_CACHE_CAPACITY)}
    assert env["LRU_CACHE_CAPACITY"] == "4096"
    assert bound_shape_caches(env) == {}
