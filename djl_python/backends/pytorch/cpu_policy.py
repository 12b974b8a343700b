"""CPU execution policy for the PyTorch backend: how many threads, how prompts are grouped,
and how many shapes oneDNN keeps compiled.

Both choices come from measurements on 2 cores (see docs/performance.md): on a CPU padding
costs as much as real tokens and oversubscribed OpenMP threads wait on each other, so the
GPU habits (one padded prefill, torch's default thread count) are slow here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, MutableMapping, Optional, Sequence

import torch

logger = logging.getLogger(__name__)

# CPU prefill: a prompt joins a group while the padding it adds stays within this many
# tokens, about what one more forward costs in weight reads (SmolLM2-135M, 2 cores: a
# forward of a few tokens costs as much as ~25 prompt tokens of compute).
CPU_PREFILL_MERGE_PAD = 32

# CPU prefill budget (prompt tokens per engine step when the configuration sets none). On a few
# cores a prefill step of a few hundred tokens is long (docs/performance.md has its times), every
# running stream waits for it, and a request's first token comes with the step that ends its
# prompt: smaller steps give a burst's first tokens sooner and running streams shorter gaps,
# while 256 rows still keep the matmuls at their compute speed. docs/performance.md compares 256
# with 512 on bursts of 16 and 32 requests.
CPU_PREFILL_BUDGET = 256


def prefill_groups(lengths: Sequence[int], merge_pad: int | None) -> list[list[int]]:
    """Indices of the prompts (by ``lengths``) that run in one prefill forward together.

    ``merge_pad=None`` puts everything in one group. Otherwise prompts are taken shortest
    first and one joins the current group while the padding it adds (the group's size
    times the length increase) is at most ``merge_pad`` tokens, so padding never costs
    more than a few extra forwards would.
    """
    if merge_pad is None or len(lengths) == 1:
        return [list(range(len(lengths)))]
    groups: list[list[int]] = []
    longest = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if groups and len(groups[-1]) * (lengths[i] - longest) <= merge_pad:
            groups[-1].append(i)
        else:
            groups.append([i])
        longest = lengths[i]
    return groups


# oneDNN (ONEDNN_PRIMITIVE_CACHE_CAPACITY) and torch's ideep layer (LRU_CACHE_CAPACITY) each keep
# up to 1024 compiled primitives, one per (rows, weight) shape, each holding buffers that grow with
# its row count: every new prompt length adds one per weight matrix, so memory grows with the
# variety of prompt lengths to gigabytes. Compiling a primitive again costs little next to the
# GEMM it runs (docs/performance.md), so a small cache bounds memory at no measurable speed.
SHAPE_CACHE_CAPACITY = 64
SHAPE_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def bound_shape_caches(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set both shape caches' capacities to ``SHAPE_CACHE_CAPACITY`` where the user has not set
    them; returns what it set. Acts only before the process's first oneDNN primitive (each
    library reads its variable once), so the backend calls it before building a CPU model."""
    target: MutableMapping[str, str] = os.environ if env is None else env
    changes = {name: str(SHAPE_CACHE_CAPACITY) for name in SHAPE_CACHE_VARIABLES if not target.get(name)}
    target.update(changes)
    return changes


def threads_from_djl_start_script(env: Mapping[str, str]) -> bool:
    """Whether ``OMP_NUM_THREADS=1`` came from DJL Serving's start script rather than the user.

    The script (djl-serving v0.28.0 ``serving/build.gradle:141-152``; 0.34-0.36
    ``serving/build.gradle.kts:134-143``) exports ``OMP_NUM_THREADS=1`` only when it is unset
    and ``NO_OMP_NUM_THREADS`` is unset, exports ``TF_NUM_INTRAOP_THREADS=1`` the same way, and
    exports ``APP_HOME`` (its install folder) before starting Java; the Python worker inherits
    all three. A user who wants one thread under DJL sets ``NO_OMP_NUM_THREADS`` (DJL's own
    switch) with ``OMP_NUM_THREADS=1``.
    """
    return (env.get("OMP_NUM_THREADS") == "1" and env.get("TF_NUM_INTRAOP_THREADS") == "1"
            and bool(env.get("APP_HOME")) and not env.get("NO_OMP_NUM_THREADS"))


def cpu_threads(env: Optional[Mapping[str, str]] = None) -> int:
    """Intra-op threads for CPU inference: torch's default (one per physical core), capped by
    the CPUs this process may use (affinity mask, cgroup v2 ``cpu.max`` quota).

    torch counts the host's cores, so in a container limited to 2 CPUs on a 64-core host it
    would start 64 OpenMP threads that wait on each other at every op; decode on this
    model is then several times slower than with 2. ``OMP_NUM_THREADS``, when the user set it,
    wins; the ``1`` DJL's start script sets for every model (``threads_from_djl_start_script``)
    does not, since it would run the model on one core: then every CPU this process may use
    serves, and that is logged.
    """
    env = os.environ if env is None else env
    from_djl = threads_from_djl_start_script(env)
    if env.get("OMP_NUM_THREADS") and not from_djl:
        return torch.get_num_threads()
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            allowed = min(allowed, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota visible: the affinity mask is all we know
    if from_djl:
        logger.info("OMP_NUM_THREADS=1 comes from DJL Serving's start script, not from you: using the %d CPU(s) "
                    "this process may use (set NO_OMP_NUM_THREADS=1 with OMP_NUM_THREADS=1 to keep one)", allowed)
        return max(1, allowed)
    return max(1, min(torch.get_num_threads(), allowed))
