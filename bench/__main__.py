"""``python -m bench [--quick] [--only offline,step,constrained,serving,peer,multiturn,latency,large,roofline]
[--no-peer] [--peer-dtypes fp32,bf16]
[--peer-streams 16,32] [--out bench/results] [--threads N]``.

Runs the selected benchmarks one after another (never in parallel: they share
the machine's cores), writes ``results.json`` and PNG charts under ``--out``
(``quick_``-prefixed for ``--quick``, so a quick run never overwrites the full
results) and prints a summary table. ``--only`` re-runs some sections and merges
them into an existing results file; each section records when it ran and the
load average it ran under.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

SECTIONS = ("offline", "step", "constrained", "serving", "peer", "multiturn", "latency", "large", "roofline")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="small workload (8 requests; the peer at fp32, 8 sequences)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="results folder")
    parser.add_argument("--no-peer", action="store_true",
                        help="skip installing and running vLLM CPU in the peer section (djl-serve alone)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads here and in the served process (default: torch's, one per core)")
    parser.add_argument("--peer-dtypes", default=None,
                        help="comma-separated dtypes for the peer section (default: fp32,bf16; quick: fp32)")
    parser.add_argument("--peer-streams", default=None,
                        help="comma-separated concurrencies for the peer section (default: 16,32; quick: 8)")
    args = parser.parse_args(argv)
    args.peer_dtypes = tuple(d.strip() for d in args.peer_dtypes.split(",") if d.strip()) if args.peer_dtypes else None
    if args.peer_dtypes and set(args.peer_dtypes) - {"fp32", "bf16"}:
        parser.error(f"--peer-dtypes: choose from fp32,bf16, got {','.join(args.peer_dtypes)}")
    try:
        args.peer_streams = tuple(int(c) for c in args.peer_streams.split(",") if c.strip()) \
            if args.peer_streams else None
    except ValueError:
        parser.error(f"--peer-streams: comma-separated integers, got {args.peer_streams!r}")
    if args.peer_streams and min(args.peer_streams) < 1:
        parser.error("--peer-streams: every concurrency must be >= 1")
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown section(s) {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    return args


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "amx_bf16")


def simd_flags() -> list[str]:
    """The vector extensions that decide this CPU's kernels (``/proc/cpuinfo``): "AMD EPYC" alone
    does not say whether a figure came from an AVX2-only or an AVX-512 machine."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return []
    return [flag for flag in SIMD_FLAGS if flag in flags]


def write_result(result: dict[str, Any], out: Path) -> None:
    """A stand-alone benchmark's result (``bench.latency``, ``bench.multiturn``), stamped with this
    CPU's vector extensions, the commit and the time, written to ``out`` and printed."""
    result["cpu_simd"] = simd_flags()
    result["commit"] = _git_commit()
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    fields: dict[str, str] = {}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lscpu.splitlines())}
    except OSError:
        pass
    return {
        "cpu_model": fields.get("Model name", "unknown"),
        # "AMD EPYC" alone names no generation: family 23 is Zen 1/2, family 25 Zen 3/4.
        "cpu_family": fields.get("CPU family"),
        "cpu_model_number": fields.get("Model"),
        "cpu_simd": simd_flags(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cuda_available": torch.cuda.is_available(),
    }


def _git_commit() -> Optional[str]:
    """The commit the run measures, with ``+dirty`` when the tree differs from it; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        status = ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", "../djl_python", ":(exclude)results"]
        dirty = subprocess.run(status, cwd=here, capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head


def _section_meta(started: float) -> dict[str, Any]:
    return {
        "commit": _git_commit(),
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - started, 1),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_simd": simd_flags(),  # each section's own: a partial re-run may run on another machine
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never reach for the hub
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the djl-serve subprocess
    import torch
    import transformers
    from transformers import AutoTokenizer

    from bench import plots, report
    from bench.workload import FULL, QUICK, make_workload
    from djl_python.default_model import default_model_dir

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    settings = QUICK if args.quick else FULL
    if args.peer_dtypes:
        settings = dataclasses.replace(settings, peer_dtypes=args.peer_dtypes)
    if args.peer_streams:
        settings = dataclasses.replace(settings, peer_streams=args.peer_streams)
    prefix = "quick_" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / f"{prefix}results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    if set(args.sections) == set(SECTIONS):
        results = {}  # a complete run starts afresh

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    model_dir = default_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    workload = make_workload(tokenizer, settings.offline)
    results["machine"] = machine_info()
    if set(args.sections) == set(SECTIONS):  # a partial re-run keeps the full run's figures
        results["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    results["mode"] = "quick" if args.quick else "full"
    results["model"] = {"name": model_dir.name, "dtype": "fp32", "device": "cpu"}
    log(f"{results['mode']} run on {results['machine']['cpu_model']} ({results['machine']['cpu_count']} cores), "
        f"load average {[round(x, 2) for x in os.getloadavg()]}")
    run_started = time.perf_counter()

    errors: dict[str, str] = {}

    def run_section(name: str, key: str, body: Any) -> None:
        """Run one section; a failure is recorded and reported, and the run goes on."""
        if name not in args.sections:
            return
        started = time.perf_counter()
        try:
            results[key] = body()
        except Exception as err:  # noqa: BLE001 - an unattended run must finish and say what failed
            errors[name] = f"{type(err).__name__}: {err}"
            results.pop(key, None)
            log(f"{name}: FAILED ({errors[name]}); going on")
            return
        results[key].update(_section_meta(started))

    def offline() -> dict[str, Any]:
        from bench.offline import run_offline

        return run_offline(model_dir, tokenizer, workload, settings.engine_slots, settings.sequential_requests, log)

    def step() -> dict[str, Any]:
        from bench.step_overhead import run_step_overhead

        return run_step_overhead(
            model_dir, tokenizer, settings.step_batches, settings.step_iters, settings.step_context, log
        )

    def constrained() -> dict[str, Any]:
        from bench.constrained import run_constrained

        return run_constrained(model_dir, tokenizer, settings.constrained_batch, settings.constrained_steps,
                               settings.constrained_rounds, log)

    def serving() -> dict[str, Any]:
        from bench.serving import run_serving

        return run_serving(
            workload, settings.serving_streams, settings.serving_requests_per_stream, settings.serving_timeout_s,
            Path(tempfile.gettempdir()) / f"{prefix}djl-serve-bench.log", log,
        )

    def peer() -> dict[str, Any]:
        from bench.peer import run_peer

        return run_peer(
            model_dir, workload, settings.peer_dtypes, settings.peer_streams, settings.peer_requests_per_stream,
            settings.peer_timeout_s, log, with_peer=not args.no_peer, comparisons=True,
        )

    run_section("offline", "offline", offline)
    run_section("step", "step_overhead", step)
    run_section("constrained", "constrained", constrained)
    run_section("serving", "serving", serving)
    if results.get("serving"):
        served = report.served_vs_offline(results)
        if served:
            results["serving"]["vs_offline"] = served
    run_section("peer", "peer", peer)

    def multiturn() -> dict[str, Any]:
        from bench.multiturn import run_multiturn

        return run_multiturn(model_dir, settings.multiturn_conversations, settings.multiturn_turns, log=log,
                             with_peer=not args.no_peer)

    def latency() -> dict[str, Any]:
        from bench.latency_peer import run_latency_peer

        return run_latency_peer(model_dir, settings.latency_repeats, log=log, with_peer=not args.no_peer)

    def large() -> dict[str, Any]:
        from bench.large_model import run_large

        return run_large(settings.large_streams, settings.large_dtypes, settings.peer_timeout_s, log,
                         with_peer=not args.no_peer)

    def roofline() -> dict[str, Any]:
        from bench.large_model import model_folder
        from bench.roofline import run_roofline

        models = {model_dir.name: (model_dir, settings.roofline_batches),
                  "llama-3.2-1b-shape": (model_folder(log), settings.roofline_batches[:2])}
        return run_roofline(models, settings.roofline_steps, log)

    run_section("multiturn", "multiturn", multiturn)
    run_section("latency", "latency", latency)
    run_section("large", "large", large)
    run_section("roofline", "roofline", roofline)
    if errors:
        results["errors"] = errors

    results["targets"] = report.target_table(results)
    if set(args.sections) == set(SECTIONS):
        results["run_duration_s"] = round(time.perf_counter() - run_started, 1)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    charts = plots.plot_all(results, args.out, prefix)
    print()
    print(report.summary(results))
    print()
    log(f"wrote {results_path} and {', '.join(str(c) for c in charts)} "
        f"in {time.perf_counter() - run_started:.1f} s (total duration)")
    if errors:
        log(f"sections that failed: {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
