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
            color = ("tab:green" if key.startswith("djl") else "tab:purple")
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
    return written
