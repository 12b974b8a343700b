"""Hostile bodies against a running stream: how much do they delay its tokens and ``/ping``?

One stream runs; after its first tokens a pinger starts, then a client sends a body over the
server's size limit and a prompt of several MB (both earn 4xx). :func:`measure` records every
token's arrival, every ping's latency and the hostile requests' window; :meth:`HostileRun.ratios`
gives the figures the docs report: the worst inter-token gap and the worst ping during the
hostile requests, each over the worst gap before them (same run, same machine).

The test suite (``tests/serving/test_http_limits.py``) runs :func:`measure` too and checks only
what holds on any machine (statuses, the stream and every ping completing, tokens arriving
while the hostile bodies are handled); the ratios are figures, measured here:

    python -m bench.hostile [--max-request-bytes N]   # djl-serve on the default model

``--flood`` measures the other threat: one client that loops, back to back, bodies of a few MB
holding about a million JSON values each, all of which earn a 4xx (:func:`junk_bodies`). The
figure is the running stream's slowdown: its mean gap between tokens while the flood runs over
its mean gap before (:meth:`HostileRun.flood_slowdown`).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx

WARMUP_TOKENS = 60  # the pinger starts here
ATTACK_AT = 150  # the hostile client starts at this token


@dataclass
class HostileRun:
    stamps: list[float] = field(default_factory=list)  # arrival time of each streamed token
    pings: list[tuple[float, float]] = field(default_factory=list)  # (sent at, latency)
    window: dict[str, float] = field(default_factory=dict)  # start/end of the hostile requests
    statuses: dict[str, int] = field(default_factory=dict)  # hostile request -> HTTP status (-1: reset)

    def gaps(self) -> list[tuple[float, float, float]]:
        return [(a, b, b - a) for a, b in zip(self.stamps, self.stamps[1:])]

    def baseline_gaps(self) -> list[float]:
        """Gaps after warm-up and before the attack."""
        return [g for _, _, g in self.gaps()[5:ATTACK_AT - 1]]

    def gaps_during(self) -> list[float]:
        """Every gap that overlaps the hostile requests' window."""
        start, end = self.window["start"], self.window["end"]
        return [g for a, b, g in self.gaps() if b >= start and a <= end]

    def pings_during(self) -> list[float]:
        start, end = self.window["start"], self.window["end"]
        return [latency for sent, latency in self.pings if start <= sent <= end]

    def flood_slowdown(self) -> float:
        """Mean gap between tokens during the hostile window over the mean gap before it."""
        before = self.baseline_gaps()
        during = self.gaps_during()
        return (sum(during) / len(during)) / (sum(before) / len(before))

    def ratios(self) -> dict[str, float]:
        worst_before = max(self.baseline_gaps())
        return {
            "worst_gap_before_s": worst_before,
            "worst_gap_during_over_before": max(self.gaps_during()) / worst_before,
            "worst_ping_during_over_gap_before": max(self.pings_during() or [0.0]) / worst_before,
        }


def measure(base: str, hostile: Callable[[], dict[str, int]], new_tokens: int = 600) -> HostileRun:
    """Run the stream, the pinger and ``hostile`` (which sends its requests and returns their
    statuses) against the server at ``base``."""
    run = HostileRun()
    stop = threading.Event()

    def ping_loop() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                sent = time.monotonic()
                status = client.get(f"{base}/ping").status_code
                run.pings.append((sent, time.monotonic() - sent if status == 200 else float("inf")))
                time.sleep(0.02)

    def attack() -> None:
        run.window["start"] = time.monotonic()
        run.statuses.update(hostile())
        run.window["end"] = time.monotonic()

    body = {"inputs": "Hello", "stream": True, "parameters": {"max_new_tokens": new_tokens, "ignore_eos": True}}
    pinger, attacker = threading.Thread(target=ping_loop), threading.Thread(target=attack)
    with httpx.stream("POST", f"{base}/invocations", json=body, timeout=60) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line:
                continue
            run.stamps.append(time.monotonic())
            if len(run.stamps) == WARMUP_TOKENS:
                pinger.start()
            if len(run.stamps) == ATTACK_AT:
                attacker.start()
    stop.set()
    for thread in (attacker, pinger):
        if thread.ident is not None:  # started
            thread.join(120)
    return run


def oversized_and_long_prompt(base: str, limit: int) -> Callable[[], dict[str, int]]:
    """The hostile requests: a body ``limit + 10`` bytes long (413 or a reset) and a prompt of
    several MB under the limit (400: more characters than the window can hold)."""

    def send() -> dict[str, int]:
        statuses = {}
        oversized = json.dumps({"inputs": "x" * (limit + 10)}).encode()
        try:
            statuses["oversized"] = httpx.post(f"{base}/invocations", content=oversized,
                                               headers={"content-type": "application/json"}, timeout=60).status_code
        except httpx.HTTPError:
            statuses["oversized"] = -1
        long_prompt = json.dumps({"inputs": "hello world " * (limit // 15)})
        statuses["long_prompt"] = httpx.post(f"{base}/invocations", content=long_prompt,
                                             headers={"content-type": "application/json"}, timeout=60).status_code
        return statuses

    return send


def junk_bodies() -> list[tuple[str, bytes]]:
    """Bodies of 2-4 MB that each earn a 4xx, every one costly to parse: about a million JSON
    values in an unknown field, in a known field of the wrong type, and in a valid-looking list
    of prompts that the route refuses (one prompt per request)."""
    million_lists = ",".join(["[]"] * 1_000_000)
    return [
        ("/v1/chat/completions", ('{"messages": [{"role": "user", "content": "hi"}], "x": [%s]}'
                                  % million_lists).encode()),
        ("/invocations", ('{"inputs": "hi", "parameters": {"stop": [%s]}}' % million_lists).encode()),
        ("/invocations", json.dumps({"inputs": ["a"] * 500_000}).encode()),
    ]


def flood(base: str, seconds: float) -> Callable[[], dict[str, int]]:
    """One client sending :func:`junk_bodies` in turn, back to back, for ``seconds``."""

    def send() -> dict[str, int]:
        statuses: dict[str, int] = {}
        bodies = junk_bodies()
        deadline = time.monotonic() + seconds
        with httpx.Client(timeout=120) as client:
            while time.monotonic() < deadline:
                for route, body in bodies:
                    status = client.post(f"{base}{route}", content=body,
                                         headers={"content-type": "application/json"}).status_code
                    statuses[f"{route} {status}"] = statuses.get(f"{route} {status}", 0) + 1
        return statuses

    return send


def main() -> None:
    from bench.serving import djl_serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-request-bytes", type=int, default=5 * 1024 * 1024)
    parser.add_argument("--log", type=Path, default=Path("/tmp/bench-hostile.log"))
    parser.add_argument("--flood", type=float, default=0.0, metavar="SECONDS",
                        help="instead: flood junk bodies for this long during the stream")
    args = parser.parse_args()
    os.environ["OPTION_MAX_REQUEST_BYTES"] = str(args.max_request_bytes)
    with djl_serve(args.log, slots=2) as base:
        if args.flood:
            run = measure(base, flood(base, args.flood), new_tokens=4000)
            figures = {"flood_slowdown": run.flood_slowdown(), **run.ratios()}
        else:
            run = measure(base, oversized_and_long_prompt(base, args.max_request_bytes))
            figures = run.ratios()
    print(json.dumps({"statuses": run.statuses, **{k: round(v, 3) for k, v in figures.items()}}, indent=1))


if __name__ == "__main__":
    main()
