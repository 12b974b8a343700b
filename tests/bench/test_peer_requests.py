"""The peer section's requests (``bench/peer.py``): each concurrency level sends requests no
earlier level sent to the same server, so a server's prompt cache (vLLM's automatic prefix
caching) cannot answer a level from what an earlier one computed."""

from __future__ import annotations

from pathlib import Path

import pytest

import bench.peer as peer
from bench.workload import Request, Workload, WorkloadSpec


def _workload(n: int) -> Workload:
    requests = [Request(prompt=f"p{i}", prompt_ids=(i + 1,) * 4, max_new_tokens=4) for i in range(n)]
    return Workload(spec=WorkloadSpec(num_requests=n, prompt_len=(4, 4), new_tokens=(4, 4)), requests=requests)


def test_each_concurrency_level_gets_requests_no_earlier_level_sent(monkeypatch) -> None:
    sent: list[list[Request]] = []

    async def fake_clients(base, reqs, count, timeout_s, model):
        sent.append(list(reqs))
        return [{"tokens": 4, "ttft_s": 0.1, "tpot_s": 0.01, "latency_s": 0.2} for _ in reqs], 1.0

    monkeypatch.setattr(peer, "_run_clients", fake_clients)
    summary = {"tokens_per_s": 1.0, "ttft_ms": {"p50": 1.0}, "tpot_ms": {"p50": 1.0}}
    monkeypatch.setattr(peer, "run_summary", lambda streams, requests, results, elapsed: summary)
    workload = _workload(10)
    peer._measure("http://127.0.0.1:9", workload, (2, 3), 2, 5.0, lambda _: None, "label")
    warmup, first, second = sent
    assert len(warmup) == 1 and warmup[0].prompt_ids == (1000,) * 16
    assert [r.prompt for r in first] == ["p0", "p1", "p2", "p3"]
    assert [r.prompt for r in second] == ["p4", "p5", "p6", "p7", "p8", "p9"]


def test_too_few_requests_for_the_levels_is_refused_before_any_server_starts(monkeypatch) -> None:
    monkeypatch.setattr(peer, "install_peer", lambda *a, **k: pytest.fail("nothing may start"))
    with pytest.raises(ValueError, match="needs 48 distinct requests .* the workload has 40"):
        peer.run_peer(Path("/nonexistent"), _workload(40), ("fp32",), (16, 32), 1, 5.0, log=lambda _: None)
