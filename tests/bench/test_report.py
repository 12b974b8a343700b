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
            "djl-serve fp32": [_run(16, 70.0, 500.0), {"streams": 32, "requests": 32, "error": "RuntimeError: timeout"}],
            "vllm-cpu fp32": [_run(16, 50.0, 1000.0), _run(32, 80.0, 900.0)],
        },
        "startup_s": {},
    }
    peer["ratios"] = ratios(peer)
    return {"peer": peer}


def test_a_failed_run_of_ours_is_a_missed_target() -> None:
    rows = {r["target"]: r for r in target_table(_results())}
    assert rows["djl-serve / vLLM CPU throughput, fp32, 16 sequences"]["measured"] == 1.4
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


def test_the_other_workloads_are_judged_against_their_own_targets() -> None:
    from bench.latency_peer import ratios as latency_ratios
    from bench.peer import variant_effect

    def figures(ttft: float, tpot: float) -> dict:
        return {"ttft_ms": ttft, "tpot_ms": tpot, "tokens_mean": 50, "requests": 3}

    latency = {"djl-serve": {"free, 1 seq": figures(90.0, 30.0), "repetitive, 1 seq": figures(300.0, 30.0)},
               "djl-serve ngram": {"repetitive, 1 seq": figures(300.0, 12.0)},
               "vllm-cpu": {"free, 1 seq": figures(100.0, 40.0), "repetitive, 1 seq": figures(290.0, 40.0)}}
    peer = _results()["peer"]
    peer["servers"]["djl-serve no-chunking fp32"] = [_run(16, 35.0, 1000.0)]
    results = {
        "multiturn": {"dtype": "fp32", "servers": {}, "vs_vllm": {"throughput": 2.0, "ttft_p50_later_turns": 0.75}},
        "large": {"dtypes": ["fp32", "bf16"], "streams": [16], "servers": {},
                  "ratios": [{"dtype": "fp32", "streams": 16, "throughput": 1.1},
                             {"dtype": "bf16", "streams": 16, "throughput": 1.25}],
                  "startup_s": {"djl-serve fp32 restart": 12.0}},
        "latency": {"servers": latency, "ratios": latency_ratios(latency)},
    }
    rows = {r["target"]: r for r in target_table(results)}
    assert rows["multi-turn chat: djl-serve / vLLM CPU throughput"]["met"] is True
    assert rows["multi-turn chat: djl-serve / vLLM CPU TTFT p50, later turns"]["met"] is False  # 0.75 > 0.7
    assert rows["1B-class model: djl-serve / vLLM CPU throughput, fp32, 16 sequences"]["met"] is False
    assert rows["1B-class model: djl-serve / vLLM CPU throughput, bf16, 16 sequences"]["met"] is True
    assert rows["djl-serve / vLLM CPU 1 sequence: TTFT, free text"]["measured"] == 0.9
    assert rows["djl-serve / vLLM CPU 1 sequence: TTFT, repetitive"]["met"] is False  # 300 / 290
    assert rows["djl-serve / vLLM CPU 1 sequence: TPOT, no speculation"]["measured"] == 0.75
    assert rows["djl-serve / vLLM CPU 1 sequence: TPOT with n-gram speculation, repetitive"]["measured"] == 0.3
    assert rows["warm restart to ready, s (large: djl-serve fp32 restart)"]["met"] is True
    assert variant_effect(peer, "no-chunking") == [{"dtype": "fp32", "streams": 16, "throughput": 2.0,
                                                    "ttft_p50": 0.5, "tpot_p50": 1.0}]
    assert variant_effect(peer, "fcfs") == []  # not run
