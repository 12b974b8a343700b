"""Decode attention of two builds of the CPU kernels, old against new, in one process.

``python -m bench.kernel_ab REV`` builds ``cpu_kernels.c`` as it was at git revision ``REV`` and as
it is in the working tree, loads both, and times ``decode_attention`` of each in turn over 30
layers of a SmolLM2-shaped cache (3 KV heads of 64, 3 query heads per KV head): every layer its
own cache tensors, so that each call reads its rows from memory, as in a step where the layer's
weights have evicted them. Cases: decode steps (``rows`` rows at context 257), and prefills
(``rows`` prompts of ``tokens`` tokens, each token attending its prompt causally, as the forward
calls the kernel for a prompt). Reported per case: the median and the minimum over the rounds,
in ms for the 30 layers, new over old, and whether the two builds' outputs are the same bits. The
two builds alternate round by round, so both see the same state of a shared machine.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

LAYERS, KV, GROUP, HEAD_DIM, CONTEXT = 30, 3, 3, 64, 257
# (dtype, what, rows, tokens): a decode step of `rows` rows, or a prefill of `rows` prompts of `tokens`.
CASES = (("fp32", "decode", 16, 1), ("fp32", "decode", 32, 1), ("bf16", "decode", 16, 1),
         ("fp32", "prefill", 2, 256), ("bf16", "prefill", 2, 256), ("fp32", "prefill", 1, 1024),
         ("bf16", "prefill", 1, 1024))


def _build_at(revision: str | None, folder: Path) -> Any:
    """``CpuKernels`` built from ``cpu_kernels.c`` at ``revision`` (None: the working tree)."""
    from djl_python.backends.pytorch.native import cpu_kernels

    source = cpu_kernels.SOURCE
    if revision is not None:
        root = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=source.parent, capture_output=True,
                              text=True, check=True).stdout.strip()
        text = subprocess.run(["git", "show", f"{revision}:{source.relative_to(root)}"], cwd=root,
                              capture_output=True, text=True, check=True).stdout
        source = folder / revision / "cpu_kernels.c"
        source.parent.mkdir(parents=True)
        source.write_text(text)
    path, _ = cpu_kernels.build(folder / "libs", source=source)
    return cpu_kernels.CpuKernels(ctypes.CDLL(str(path)), path)


def run_kernel_ab(revision: str, rounds: int = 25) -> dict[str, Any]:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        builds = {"old": _build_at(revision, Path(tmp)), "new": _build_at(None, Path(tmp))}
        cases = []
        for dtype_name, what, rows, tokens in CASES:
            dtype = torch.float32 if dtype_name == "fp32" else torch.bfloat16
            positions = max(CONTEXT, tokens)
            layers = [(torch.randn(rows, KV, positions, HEAD_DIM, dtype=dtype),
                       torch.randn(rows, KV, positions, HEAD_DIM, dtype=dtype)) for _ in range(LAYERS)]
            q = torch.randn(rows * tokens, KV * GROUP * HEAD_DIM, dtype=dtype)
            if what == "decode":
                row_ids, lengths = torch.arange(rows), torch.full((rows,), CONTEXT)
            else:  # each prompt's tokens in its row, token i attending columns 0..i
                row_ids = torch.arange(rows).repeat_interleave(tokens)
                lengths = torch.arange(1, tokens + 1).repeat(rows)
            outputs = [kernels.decode_attention(q, *layers[0], row_ids, lengths, HEAD_DIM ** -0.5)
                       for kernels in builds.values()]
            bits = torch.int16 if dtype == torch.bfloat16 else torch.int32
            same_bits = torch.equal(outputs[0].view(bits), outputs[1].view(bits))
            samples: dict[str, list[float]] = {name: [] for name in builds}
            for _ in range(rounds):
                for name, kernels in builds.items():
                    start = time.perf_counter()
                    for keys, values in layers:
                        kernels.decode_attention(q, keys, values, row_ids, lengths, HEAD_DIM ** -0.5)
                    samples[name].append((time.perf_counter() - start) * 1000)
            median = {name: round(statistics.median(s), 2) for name, s in samples.items()}
            cases.append({"dtype": dtype_name, "what": what, "rows": rows, "tokens": tokens, "median_ms": median,
                          "min_ms": {name: round(min(s), 2) for name, s in samples.items()},
                          "new_over_old": round(median["new"] / median["old"], 3), "same_bits": same_bits})
            print(cases[-1], flush=True)
    return {"old": revision, "layers": LAYERS, "decode_context": CONTEXT, "threads": torch.get_num_threads(),
            "rounds": rounds, "cases": cases}


def main() -> None:
    from bench.__main__ import write_result

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revision", help="the git revision whose cpu_kernels.c is 'old'")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kernel_ab.json")
    args = parser.parse_args()
    write_result(run_kernel_ab(args.revision, args.rounds), args.out)


if __name__ == "__main__":
    main()
