"""A roofline for the decode step: achieved FLOP/s and bytes/s against this machine's measured peaks.

Peaks, measured here with torch on every core torch uses:

* ``peak_flops``: fp32 ``F.linear`` of a 512-row input by a 2048 x 2048 weight (a GEMM as large as
  a prefill's), median of repeats;
* ``peak_bytes_per_s``: reading a 1 GiB fp32 tensor (``sum``), median of repeats: what streaming
  the weights through the cores can reach.

Per model and batch size ``B`` (every sequence at context ``L``), one decode step of the
PyTorch backend (``backend.decode``, median over steps) is charged:

* FLOPs: ``2 * B * matmul parameters`` (every linear and the LM head) plus attention,
  ``4 * B * L * layers * heads * head_dim``;
* bytes: the matmul weights as the native forward holds them (fp32 here) plus the KV cache the
  step reads, ``B * L * layers * 2 * kv_heads * head_dim * 4``.

``bound_ms`` is the larger of FLOPs / peak FLOP/s and bytes / peak bytes/s, the least time the
step could take on this machine; ``efficiency`` is ``bound_ms`` over the measured step. What is
left (``1 - efficiency``) is the per-step cost that is neither matmul arithmetic nor memory
traffic at the measured peaks: attention kernels, norms, rope, the host side of the step.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

CONTEXT = 256


def _median_s(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def peaks(repeats: int = 7) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    x, w = torch.randn(512, 2048), torch.randn(2048, 2048)
    gemm_s = _median_s(lambda: F.linear(x, w), repeats)
    big = torch.ones(256 * 1024 * 1024)  # 1 GiB of fp32
    read_s = _median_s(lambda: big.sum(), repeats)
    return {"peak_gflops": round(2 * 512 * 2048 * 2048 / gemm_s / 1e9, 1),
            "peak_gb_per_s": round(big.nbytes / read_s / 1e9, 2), "threads": torch.get_num_threads()}


def _geometry(config: Any) -> dict[str, int]:
    text = config.get_text_config()
    h, layers, inter, vocab = text.hidden_size, text.num_hidden_layers, text.intermediate_size, text.vocab_size
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or h // heads
    kv = getattr(text, "num_key_value_heads", heads)
    per_layer = h * heads * head_dim + 2 * h * kv * head_dim + heads * head_dim * h + 3 * h * inter
    return {"matmul_params": layers * per_layer + vocab * h, "layers": layers, "heads": heads, "kv_heads": kv,
            "head_dim": head_dim}


def step_roofline(model_dir: Path, batches: tuple[int, ...], steps: int, peak: dict[str, float],
                  log: Callable[[str], None]) -> list[dict[str, Any]]:
    import torch

    from djl_python.backends.pytorch.backend import PyTorchBackend

    backend = PyTorchBackend.load(model_dir, max_slots=max(batches), dtype="fp32", n_positions=CONTEXT + steps + 8)
    g = _geometry(backend.model.config)
    rows = []
    for batch in batches:
        slots = list(range(batch))
        backend.prefill(slots, [[1000 + (7 * s + i) % 20000 for i in range(CONTEXT)] for s in slots])
        position = [CONTEXT]

        def decode() -> None:
            backend.decode(slots, [1234] * batch, [position[0]] * batch)
            position[0] += 1

        with torch.inference_mode():
            step_s = _median_s(decode, steps)
        for slot in slots:
            backend.release(slot)
        flops = 2 * batch * g["matmul_params"] + 4 * batch * CONTEXT * g["layers"] * g["heads"] * g["head_dim"]
        bytes_ = 4 * g["matmul_params"] + batch * CONTEXT * g["layers"] * 2 * g["kv_heads"] * g["head_dim"] * 4
        bound_s = max(flops / (peak["peak_gflops"] * 1e9), bytes_ / (peak["peak_gb_per_s"] * 1e9))
        row = {"batch": batch, "context": CONTEXT, "step_ms": round(step_s * 1000, 2),
               "gflops_per_s": round(flops / step_s / 1e9, 1), "gb_per_s": round(bytes_ / step_s / 1e9, 2),
               "bound_ms": round(bound_s * 1000, 2), "bound_by": "memory" if bytes_ / (peak["peak_gb_per_s"] * 1e9)
               >= flops / (peak["peak_gflops"] * 1e9) else "compute",
               "efficiency": round(bound_s / step_s, 3)}
        log(f"  roofline {model_dir.name} batch {batch}: {row}")
        rows.append(row)
    backend.close()
    return rows


def run_roofline(models: dict[str, tuple[Path, tuple[int, ...]]], steps: int,
                 log: Callable[[str], None]) -> dict[str, Any]:
    peak = peaks()
    log(f"roofline: peaks {peak}")
    return {"peaks": peak, "models": {name: step_roofline(folder, batches, steps, peak, log)
                                      for name, (folder, batches) in models.items()}}
