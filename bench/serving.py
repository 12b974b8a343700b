"""Served throughput and latency: ``djl-serve`` under concurrent streaming clients.

The server runs as a subprocess on 127.0.0.1 with the default model (fp32, CPU,
``max_rolling_batch_size`` 32). ``C`` asyncio clients share one queue of requests
from the offline workload and each streams one request at a time from
``POST /v1/completions`` (``stream: true``, token-id prompt, greedy, ``ignore_eos``,
``stream_options.include_usage`` for an exact token count), so at most ``C``
requests are in flight, like ``C`` engine slots offline.

Per request: time to first token (TTFT: request sent to the first streamed token)
and time per output token (TPOT: first to last token over ``tokens - 1``). A run
reports output tokens/s over its wall time and p50/p90/p99 of both latencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import aiohttp
import httpx

from bench.workload import Request, Workload

SERVER_SLOTS = 32
_START_TIMEOUT_S = 180.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def djl_serve(log_path: Path, slots: int = SERVER_SLOTS) -> Iterator[str]:
    """Start ``djl-serve`` on a free loopback port; yield its base URL once ``/ping`` is 200."""
    with djl_serve_process(log_path, slots) as (base, _):
        yield base


@contextlib.contextmanager
def djl_serve_process(log_path: Path, slots: int = SERVER_SLOTS) -> Iterator[tuple[str, subprocess.Popen]]:
    """``djl_serve``, yielding the process too (for its memory)."""
    port = _free_port()
    env = {**os.environ, "OPTION_MAX_ROLLING_BATCH_SIZE": str(slots), "OPTION_DTYPE": "fp32"}
    cmd = [sys.executable, "-m", "djl_python.serving.cli", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning"]
    with open(log_path, "wb") as log:
        # No model configured anywhere: the default model (an empty --model-dir is an error).
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(proc, base, log_path)
            yield base, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen, base: str, log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"djl-serve exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"{base}/ping", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"djl-serve not ready after {_START_TIMEOUT_S:.0f}s; see {log_path}")


async def sse_events(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """POST ``body`` to an OpenAI streaming route; yield each event's JSON (``RuntimeError`` on an HTTP
    error or an in-band error event)."""
    async with session.post(url, json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.read())[:300]!r}")
        async for raw in resp.content:  # one SSE line at a time
            line = raw.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"stream error: {event['error']}")
            yield event


async def _stream_one(
    session: aiohttp.ClientSession, base: str, req: Request, model: str | None = None
) -> dict[str, float]:
    body = {
        "prompt": list(req.prompt_ids),
        "max_tokens": req.max_new_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if model is not None:  # both servers refuse a name they do not serve (404), as vLLM does
        body["model"] = model
    sent = time.perf_counter()
    first = last = None
    tokens = None
    async for event in sse_events(session, f"{base}/v1/completions", body):
        if event.get("choices"):
            now = time.perf_counter()
            first = first if first is not None else now
            last = now
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
    if first is None or last is None or tokens is None:
        raise RuntimeError("the stream ended without tokens or usage")
    if tokens != req.max_new_tokens:
        raise RuntimeError(f"served {tokens} tokens, asked for {req.max_new_tokens} with ignore_eos")
    return {
        "tokens": tokens,
        "ttft_s": first - sent,
        "tpot_s": (last - first) / (tokens - 1) if tokens > 1 else 0.0,
    }


async def _run_clients(
    base: str, requests: list[Request], streams: int, timeout_s: float, model: str | None = None
) -> tuple[list, float]:
    """``streams`` clients draining one shared queue; returns per-request figures and the wall time."""
    queue: asyncio.Queue[Request] = asyncio.Queue()
    for req in requests:
        queue.put_nowait(req)
    results: list[dict[str, float]] = []

    async def client_loop(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                req = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            results.append(await _stream_one(session, base, req, model))

    connector = aiohttp.TCPConnector(limit=streams)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client_loop(session) for _ in range(streams))), timeout_s)
        elapsed = time.perf_counter() - start
    return results, elapsed


def run_summary(streams: int, requests: int, results: list[dict[str, float]], elapsed: float) -> dict[str, Any]:
    """One concurrency level's figures: output tokens/s over the wall time, TTFT and TPOT percentiles."""
    tokens = sum(r["tokens"] for r in results)
    return {
        "streams": streams,
        "requests": requests,
        "output_tokens": tokens,
        "elapsed_s": round(elapsed, 3),
        "tokens_per_s": round(tokens / elapsed, 2),
        "ttft_ms": _percentiles([r["ttft_s"] for r in results]),
        "tpot_ms": _percentiles([r["tpot_s"] for r in results]),
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:  # nearest rank: an observed value, no interpolation
        return round(ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1] * 1000, 2)

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99)}


def run_serving(
    workload: Workload,
    streams: tuple[int, ...],
    requests_per_stream: int,
    timeout_s: float,
    log_path: Path,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """One server, one run per concurrency level; run ``C`` serves the first ``C * requests_per_stream``
    requests of ``workload`` (all of it at most)."""
    runs = []
    log("serving: starting djl-serve")
    with djl_serve(log_path) as base:
        # Warm-up: the first request pays one-off costs (allocator, lazy imports).
        asyncio.run(_run_clients(base, [Request("", (1000,) * 16, 4)], 1, timeout_s))
        for count in streams:
            reqs = workload.requests[: count * requests_per_stream]
            log(f"serving: {count} streams, {len(reqs)} requests")
            cpu_before = time.process_time()
            results, elapsed = asyncio.run(_run_clients(base, reqs, count, timeout_s))
            client_cpu = time.process_time() - cpu_before
            # The clients share the 2 cores with the server: their CPU is the server's loss.
            runs.append({**run_summary(count, len(reqs), results, elapsed),
                         "client_cpu_fraction": round(client_cpu / elapsed, 3)})
            log(f"  {runs[-1]['tokens_per_s']} tok/s, TTFT p50 {runs[-1]['ttft_ms']['p50']} ms, "
                f"TPOT p50 {runs[-1]['tpot_ms']['p50']} ms")
    return {"server_slots": SERVER_SLOTS, "requests_per_stream": requests_per_stream, "runs": runs}
