"""PNG charts of one run's results (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on a server; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_offline(offline: dict[str, Any], path: Path) -> Path:
    runs = [*offline["engine_runs"], *offline["baselines"].values()]
    names = [r["name"].replace(" (", "\n(").replace(" static", "\nstatic").replace(" one", "\none") for r in runs]
    values = [r["tokens_per_s"] for r in runs]
    colors = ["tab:green"] * len(offline["engine_runs"]) + ["tab:gray"] * len(offline["baselines"])
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bars = ax.bar(range(len(runs)), values, color=colors)
    ax.bar_label(bars, fmt="%.0f")
    ax.set_xticks(range(len(runs)), names, fontsize=8)
    ax.set_ylabel("output tokens / s")
    w = offline["workload"]
    ax.set_title(f"Offline throughput: {w['num_requests']} requests, prompt {w['prompt_len'][0]}-"
                 f"{w['prompt_len'][1]}, new {w['new_tokens'][0]}-{w['new_tokens'][1]} tokens")
    return _save(fig, path)


def plot_step_overhead(step: dict[str, Any], path: Path) -> Path:
    rows = step["rows"]
    series = [("engine.step()", "engine_step_ms", "tab:green"), ("backend.decode()", "backend_decode_ms", "tab:blue"),
              ("HF forward (DynamicCache)", "hf_forward_ms", "tab:gray")]
    width = 0.27
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (label, key, color) in enumerate(series):
        xs = [j + (i - 1) * width for j in range(len(rows))]
        bars = ax.bar(xs, [r[key] for r in rows], width, label=label, color=color)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(rows)), [f"batch {r['batch']}\n(x{r['engine_over_decode']:.2f})" for r in rows])
    ax.set_ylabel("median ms per decode step")
    ax.set_title(f"Decode step at context {step['context']}: engine vs bare forward")
    ax.legend()
    return _save(fig, path)


def plot_serving(serving: dict[str, Any], path: Path) -> Path:
    runs = serving["runs"]
    streams = [r["streams"] for r in runs]
    fig, (ax_tp, ax_ttft, ax_tpot) = plt.subplots(1, 3, figsize=(13, 4))
    ax_tp.plot(streams, [r["tokens_per_s"] for r in runs], "o-", color="tab:green")
    ax_tp.set_title("throughput")
    ax_tp.set_ylabel("output tokens / s")
    for ax, key, title in ((ax_ttft, "ttft_ms", "time to first token"), (ax_tpot, "tpot_ms", "time per output token")):
        for q, style in (("p50", "o-"), ("p90", "s--"), ("p99", "^:")):
            ax.plot(streams, [r[key][q] for r in runs], style, label=q)
        ax.set_title(title)
        ax.set_ylabel("ms")
        ax.legend()
    for ax in (ax_tp, ax_ttft, ax_tpot):
        ax.set_xscale("log", base=2)
        ax.set_xticks(streams, [str(s) for s in streams])
        ax.set_xlabel("concurrent streams")
    return _save(fig, path)


def plot_peer(peer: dict[str, Any], path: Path) -> Path:
    """Throughput, TTFT p50 and TPOT p50 of every (server, dtype) at each concurrency."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    keys = [k for k, runs in peer["servers"].items() if any("tokens_per_s" in r for r in runs)]
    streams = peer["streams"]
    width = 0.8 / max(1, len(keys))
    metrics = (("tokens_per_s", "served output tokens / s", None), ("ttft_ms", "TTFT p50, ms", "p50"),
               ("tpot_ms", "TPOT p50, ms", "p50"))
    for ax, (metric, title, q) in zip(axes, metrics):
        for i, key in enumerate(keys):
            by = {r["streams"]: r for r in peer["servers"][key] if "tokens_per_s" in r}
            values = [(by[s][metric][q] if q else by[s][metric]) if s in by else 0 for s in streams]
            color = ("tab:olive" if "no-chunking" in key else "tab:cyan" if "fcfs" in key
                     else "tab:green" if key.startswith("djl") else "tab:purple")
            hatch = "//" if key.endswith("bf16") else None
            bars = ax.bar([j + (i - (len(keys) - 1) / 2) * width for j in range(len(streams))], values, width,
                          label=key, color=color, hatch=hatch, alpha=0.85 if hatch else 1.0)
            # A run that failed has no bar: say so rather than draw a 0.
            ax.bar_label(bars, labels=[f"{v:.0f}" if s in by else "failed" for v, s in zip(values, streams)],
                         fontsize=7)
        ax.set_xticks(range(len(streams)), [f"{s} sequences" for s in streams])
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    note = "" if peer["peer"]["available"] else " (vLLM CPU not available)"
    fig.suptitle(f"djl-serve vs vLLM CPU, same OpenAI streaming workload{note}")
    return _save(fig, path)


def plot_roofline(roofline: dict[str, Any], path: Path) -> Path:
    """Each measured decode step as a point (arithmetic intensity, achieved GFLOP/s) under the roofs
    of this machine's measured peaks."""
    import math

    peak = roofline["peaks"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    xs = [2 ** (i / 4) for i in range(-8, 25)]
    ax.plot(xs, [min(peak["peak_gflops"], peak["peak_gb_per_s"] * x) for x in xs], color="black",
            label=f"roof: {peak['peak_gb_per_s']} GB/s read, {peak['peak_gflops']} GFLOP/s GEMM")
    for (model, rows), marker in zip(roofline["models"].items(), "os^D"):
        intensity = [r["gflops_per_s"] / r["gb_per_s"] for r in rows]
        achieved = [r["gflops_per_s"] for r in rows]
        ax.scatter(intensity, achieved, marker=marker, label=model, zorder=3)
        for x, y, r in zip(intensity, achieved, rows):
            ax.annotate(f"B={r['batch']} ({r['efficiency']:.0%})", (x, y), textcoords="offset points", xytext=(5, -10),
                        fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(1, 10 ** math.ceil(math.log10(peak["peak_gflops"] * 1.5)))
    ax.set_xlabel("arithmetic intensity, FLOP / byte")
    ax.set_ylabel("achieved GFLOP/s (fp32)")
    ax.set_title("decode step against this machine's roofline (in parentheses: share of the bound)")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_targets(targets: list[dict[str, Any]], path: Path) -> Path:
    """The ratios against vLLM CPU, each beside its threshold (restarts and our own ratios left out)."""
    rows = [t for t in targets if "vLLM" in t["target"] and isinstance(t["measured"], (int, float))]
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.2))
    ys = range(len(rows))
    colors = ["tab:green" if t["met"] else "tab:red" for t in rows]
    bars = ax.barh(list(ys), [t["measured"] for t in rows], color=colors)
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    for y, t in zip(ys, rows):
        threshold = float(t["threshold"].split()[-1])
        ax.plot([threshold, threshold], [y - 0.4, y + 0.4], color="black")
    ax.set_yticks(list(ys), [t["target"].replace("djl-serve / vLLM CPU ", "") for t in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ours / vLLM CPU (black tick: the target; green met, red missed)")
    return _save(fig, path)


def plot_all(results: dict[str, Any], out_dir: Path, prefix: str = "") -> list[Path]:
    """Write every chart this run has data for; returns the files written."""
    written = []
    if results.get("offline"):
        written.append(plot_offline(results["offline"], out_dir / f"{prefix}offline_throughput.png"))
    if results.get("step_overhead"):
        written.append(plot_step_overhead(results["step_overhead"], out_dir / f"{prefix}step_overhead.png"))
    if results.get("serving"):
        written.append(plot_serving(results["serving"], out_dir / f"{prefix}serving.png"))
    if results.get("peer"):
        written.append(plot_peer(results["peer"], out_dir / f"{prefix}peer.png"))
    if results.get("roofline"):
        written.append(plot_roofline(results["roofline"], out_dir / f"{prefix}roofline.png"))
    if any("vLLM" in t["target"] for t in results.get("targets", [])):
        written.append(plot_targets(results["targets"], out_dir / f"{prefix}targets.png"))
    return written
