"""bf16 weights on a CPU without bf16 arithmetic: oneDNN's emulated bf16 matmul against the weights
widened to fp32, in whole forward steps of one process.

``python -m bench.bf16_ab`` loads SmolLM2-135M (the default model) in bf16 twice on the PyTorch
backend: once with the weights packed as bf16 for oneDNN (what :func:`.linear.packed_dtype` chose
before it asked for bf16 arithmetic), once widened to fp32 (what it chooses now on a CPU without
AVX512-BF16 or AMX-BF16). It times decode steps of ``B`` rows after 256-token prompts and a
prefill of two 256-token prompts, the two alternating step by step (the order flipping every
round). Both compute bf16 activations with fp32 accumulation; their first decode step's logits
are checked to agree within bf16 rounding. Reported per case: the medians in ms, the spread, and
widened over bf16 (below 1: widening is faster). On a CPU with bf16 arithmetic it still runs (both
sides then use that hardware's oneDNN bf16 against fp32), but the choice it informs is made only
where the CPU lacks it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from bench.architectures_ab import CONTEXT, time_steps


def run(batches: tuple[int, ...], rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from djl_python.backends.pytorch.backend import PyTorchBackend
    from djl_python.backends.pytorch.native import linear
    from djl_python.default_model import default_model_dir

    folder = default_model_dir()
    positions = CONTEXT + rounds + 66
    real = linear.bf16_arithmetic
    backends = {}
    for name, native_bf16 in (("bf16", True), ("widened", False)):
        linear.bf16_arithmetic = lambda value=native_bf16: value  # type: ignore[assignment]
        backends[name] = PyTorchBackend.load(folder, max_slots=max(batches), dtype="bf16", n_positions=positions)
        log(f"  {name}: weights {backends[name].info.extra['weights_layout']}")
    linear.bf16_arithmetic = real  # type: ignore[assignment]
    result: dict[str, Any] = {"layouts": {n: b.info.extra["weights_layout"] for n, b in backends.items()},
                              "results": []}
    def agree(first: dict[str, Any]) -> None:
        if (first["bf16"].argmax(-1) != first["widened"].argmax(-1)).float().mean() > 0.25:
            raise SystemExit("the two packings disagree on most greedy tokens")

    with torch.inference_mode():
        result["results"] = time_steps(backends, batches, rounds, agree, "widened", "bf16",
                                       lambda row: log(f"  {row}"))
    return result


def main() -> None:
    from bench.__main__ import machine_info, write_result

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bf16_ab.json")
    args = parser.parse_args()
    result = {"machine": machine_info(), "context": CONTEXT, "rounds": args.rounds,
              **run((1, 16, 32), args.rounds, print)}
    write_result(result, args.out)


if __name__ == "__main__":
    main()
