"""Memory under varied prompt lengths: does the server's resident memory stop growing?

``djl-serve`` (default model) answers rounds of requests whose prompt lengths are drawn at
random, so nearly every prefill has a shape not seen before; the server's RSS is read from
``/proc/<pid>/status`` after each round. Fixed shapes are known to add nothing; what this
measures is whatever is cached per shape (allocator arenas, oneDNN primitives, torch's own
caches). Memory is bounded when the late rounds add next to nothing although their shapes are
still new. Bounded in time by ``--rounds`` x ``--requests``:

    python -m bench.soak [--rounds 6] [--requests 100] [--max-words 700]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import random
import time
from pathlib import Path

import httpx


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def run_round(base: str, rng: random.Random, requests: int, max_words: int, clients: int = 4) -> int:
    """``requests`` completions with random prompt lengths, ``clients`` at a time; returns the
    number of distinct prompt lengths (in words) sent."""
    lengths = [rng.randint(1, max_words) for _ in range(requests)]

    def one(words: int) -> int:
        body = {"prompt": " ".join(["word"] * words), "max_tokens": 2, "temperature": 0}
        return httpx.post(f"{base}/v1/completions", json=body, timeout=300).status_code

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(one, lengths))
    if any(status != 200 for status in statuses):
        raise RuntimeError(f"unexpected statuses: {sorted(set(statuses))}")
    return len(set(lengths))


def main() -> None:
    from bench.serving import djl_serve_process

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--max-words", type=int, default=700)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, default=Path("/tmp/bench-soak.log"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    with djl_serve_process(args.log, slots=4) as (base, proc):
        run_round(base, random.Random(-1), 8, 16)  # warm-up: a few short prompts
        start = rss_mib(proc.pid)
        rows.append({"round": 0, "requests": 0, "rss_mib": round(start, 1)})
        for index in range(1, args.rounds + 1):
            began = time.monotonic()
            distinct = run_round(base, rng, args.requests, args.max_words)
            rows.append({"round": index, "requests": args.requests * index, "distinct_lengths": distinct,
                         "rss_mib": round(rss_mib(proc.pid), 1), "seconds": round(time.monotonic() - began, 1)})
            print(json.dumps(rows[-1]), flush=True)
    growth = [b["rss_mib"] - a["rss_mib"] for a, b in zip(rows, rows[1:])]
    print(json.dumps({"rounds": rows, "growth_per_round_mib": [round(g, 1) for g in growth]}, indent=1))


if __name__ == "__main__":
    main()
