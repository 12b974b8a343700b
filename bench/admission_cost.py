"""``python -m bench.admission_cost``: what one ``Scheduler.schedule()`` costs when it admits a
whole burst, in arrival order and shortest prompt first, at a few (slots, waiting) sizes.

No model and no torch: the scheduler alone, on a chunked backend's limits with a budget that
does not bind, prompts of 16-256 tokens (seeded). Each figure is the median of ``--rounds``
fresh schedulers, in milliseconds; the two policies alternate round by round. A ratio within
one run is what to read (docs/performance.md).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import replace

from djl_python.backends.base import BackendLimits
from djl_python.engine.request import SamplingParams
from djl_python.engine.scheduler import Scheduler, SchedulingPolicy
from djl_python.engine.sequence import Sequence

SIZES = ((32, 288), (256, 512), (256, 2048))  # (slots, waiting); 288: 32 slots + the default 256 waiting
POLICIES: tuple[SchedulingPolicy, ...] = ("fcfs", "shortest_prompt_first")


def one_burst(slots: int, waiting: int, policy: SchedulingPolicy, seed: int = 0) -> float:
    """Seconds one ``schedule()`` takes to admit ``slots`` of ``waiting`` queued requests."""
    limits = replace(BackendLimits(slots, 4096, (2048,), 100, (2,), None), padded_prefill=False,
                     can_chunk_prefill=True)
    scheduler = Scheduler(limits, max_prefill_tokens=10**7, chunked=True, policy=policy)
    rng = random.Random(seed)
    for i in range(waiting):
        prompt = list(range(1, rng.randint(16, 256) + 1))
        scheduler.add(Sequence(f"r{i}", prompt, SamplingParams(), 8, detokenizer=None,  # type: ignore[arg-type]
                               stop_checker=None))  # type: ignore[arg-type]
    started = time.perf_counter()
    scheduler.schedule()
    elapsed = time.perf_counter() - started
    if scheduler.num_running != min(slots, waiting):
        raise RuntimeError(f"admitted {scheduler.num_running}, expected {min(slots, waiting)}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"{'slots':>5} {'waiting':>7} {'fcfs ms':>8} {'shortest ms':>11} {'ratio':>6}")
    for slots, waiting in SIZES:
        samples: dict[str, list[float]] = {policy: [] for policy in POLICIES}
        for round_ in range(args.rounds):
            for policy in POLICIES:
                samples[policy].append(one_burst(slots, waiting, policy, seed=round_))
        fcfs, shortest = (statistics.median(samples[p]) * 1000 for p in POLICIES)
        print(f"{slots:>5} {waiting:>7} {fcfs:>8.2f} {shortest:>11.2f} {shortest / fcfs:>6.1f}")


if __name__ == "__main__":
    main()
