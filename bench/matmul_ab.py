"""The panel matmul against oneDNN's, in whole forward steps of one process.

``python -m bench.matmul_ab`` loads each model twice on the PyTorch backend: once as the backend
chooses (weights packed in the CPU kernels' panels where this CPU has their matmul), once with
the panels refused, so that the weights are packed for oneDNN as before. It then times, on
each in turn, a decode step of ``B`` rows at context 256 (``backend.decode``) and a prefill of
512 prompt tokens (two prompts of 256): the two backends alternate step by step, so both see
the same state of a shared machine. Reported per case: the median of each, in ms, and panels
over oneDNN (below 1: the panels are faster).

Models: SmolLM2-135M (the default model) in fp32 and bf16, and the 1B-class bench model
(Llama-3.2-1B shape, random weights; ``bench/large_model.py``) in fp32.

Where the panels are used the layer stack runs too (the backend's default) and the oneDNN side
runs the Python layer loop, so a figure is what the panels bring with the stack; ``--loop`` runs
the loop on both sides, so that only the matmuls differ.

``--avx2`` runs the fp32 cases as an AVX2-only CPU would on this one (which must have AVX-512):
the CPU kernels built without AVX-512 (``-mno-avx512f``: the 8-wide matmul, and so the layer
stack), oneDNN held to AVX2 (``ONEDNN_MAX_CPU_ISA``) and torch's own kernels too
(``ATEN_CPU_CAPABILITY``). It says how the two sides compare in AVX2 code on this core, not
what an AVX2 CPU's cores, caches and memory would give.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

CONTEXT = 256
# What holds oneDNN and torch's own kernels to AVX2 (--avx2).
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def _load_pair(folder: Path, dtype: str, rows: int, stack: bool = True) -> dict[str, Any]:
    from djl_python.backends.pytorch.backend import PyTorchBackend
    from djl_python.backends.pytorch.native import panel_linear

    positions = CONTEXT + 64
    panels = PyTorchBackend.load(folder, max_slots=rows, dtype=dtype, n_positions=positions, layer_stack=stack)
    real = panel_linear.refusal
    panel_linear.refusal = lambda kernels, weight: "refused by bench.matmul_ab"
    try:
        onednn = PyTorchBackend.load(folder, max_slots=rows, dtype=dtype, n_positions=positions)
    finally:
        panel_linear.refusal = real
    layouts = {name: b.info.extra.get("weights_layout") for name, b in (("panels", panels), ("onednn", onednn))}
    if layouts["panels"] != "panels":
        raise SystemExit(f"no panel matmul here for {dtype}: the backend packed {layouts['panels']}")
    return {"panels": panels, "onednn": onednn}


def _alternate(backends: dict[str, Any], step: Callable[[str, Any], None], rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in backends}
    for name, backend in backends.items():
        step(name, backend)  # warm-up
    for _ in range(rounds):
        for name, backend in backends.items():
            start = time.perf_counter()
            step(name, backend)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) * 1000 for name, s in samples.items()}


def run_case(folder: Path, dtype: str, batches: tuple[int, ...], rounds: int, stack: bool,
             log: Callable[[str], None]) -> list[dict[str, Any]]:
    import torch

    backends = _load_pair(folder, dtype, max(batches), stack)
    results = []
    with torch.inference_mode():
        prompts = [[1000 + (7 * s + i) % 20000 for i in range(CONTEXT)] for s in range(max(batches))]
        for batch in batches:
            slots = list(range(batch))
            for backend in backends.values():
                backend.prefill(slots, prompts[:batch])
            position = {name: CONTEXT for name in backends}

            def decode(name: str, backend: Any) -> None:
                backend.decode(slots, [1234] * batch, [position[name]] * batch)
                position[name] += 1

            ms = _alternate(backends, decode, rounds)
            for backend in backends.values():
                for slot in slots:
                    backend.release(slot)
            results.append({"what": f"decode, {batch} rows", **_row(ms)})
            log(f"  {folder.name} {dtype} {results[-1]}")
        pair = [0, 1]

        def prefill(name: str, backend: Any) -> None:
            backend.prefill(pair, prompts[:2])
            for slot in pair:
                backend.release(slot)

        ms = _alternate(backends, prefill, max(3, rounds // 8))
        results.append({"what": "prefill, 2 x 256 tokens", **_row(ms)})
        log(f"  {folder.name} {dtype} {results[-1]}")
    for backend in backends.values():
        backend.close()
    return results


def _row(ms: dict[str, float]) -> dict[str, Any]:
    return {"panels_ms": round(ms["panels"], 2), "onednn_ms": round(ms["onednn"], 2),
            "panels_over_onednn": round(ms["panels"] / ms["onednn"], 3)}


def _use_the_avx2_build() -> str:
    """Make the backend load the CPU kernels built without AVX-512; their path."""
    import ctypes

    from djl_python.backends.pytorch import backend
    from djl_python.backends.pytorch.native import cpu_kernels

    if "avx512f" not in cpu_kernels.cpu_flags():
        raise SystemExit("--avx2 compares AVX2 code on an AVX-512 CPU; this CPU runs AVX2 code already: "
                         "run without --avx2")
    path, _ = cpu_kernels.build(cpu_kernels.default_cache_dir() / "kernels-bench-avx2",
                                cpu_kernels.FLAGS + ("-mno-avx512f",))
    kernels = cpu_kernels.CpuKernels(ctypes.CDLL(str(path)), path)
    if kernels.vector_bits != 256:  # GCC keeps AVX-512 under -mno-avx512f where -march enables AVX10
        raise SystemExit("this compiler kept AVX-512 code under -mno-avx512f (an AVX10 CPU): no AVX2 build here")
    backend.load_cpu_kernels = lambda: (kernels, f"the AVX2 build {path}")
    return str(path)


def run_matmul_ab(rounds: int, log: Callable[[str], None], large: bool = True, avx2: bool = False,
                  stack: bool = True) -> dict[str, Any]:
    import torch

    from bench import large_model
    from djl_python.default_model import default_model_dir

    smol = default_model_dir()
    cases: dict[str, Any] = {"threads": torch.get_num_threads(), "context": CONTEXT}
    if avx2:
        cases["avx2"] = {"kernels": _use_the_avx2_build(), **{k: os.environ.get(k) for k in AVX2_ENV},
                         "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    cases["panels_layer_stack"] = stack
    cases["SmolLM2-135M fp32"] = run_case(smol, "fp32", (1, 16, 32), rounds, stack, log)
    from djl_python.backends.pytorch.native.cpu_kernels import load

    kernels = load()[0]
    if not avx2 and kernels is not None and torch.bfloat16 in kernels.gemm_panel:  # bf16 panels: AVX512-BF16
        cases["SmolLM2-135M bf16"] = run_case(smol, "bf16", (1, 16, 32), rounds, stack, log)
    else:
        cases["SmolLM2-135M bf16"] = "skipped: no bf16 panel matmul on this CPU (AVX512-BF16)"
    if large:
        cases["1B-class fp32"] = run_case(large_model.model_folder(log), "fp32", (1, 16), max(5, rounds // 4), stack,
                                          log)
    return cases


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--no-large", action="store_true", help="skip the 1B-class model")
    parser.add_argument("--avx2", action="store_true", help="AVX2 code on both sides (module docstring)")
    parser.add_argument("--loop", action="store_true",
                        help="the panels' side runs the Python layer loop too, so that only the matmuls differ")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/matmul_ab[_avx2].json")
    args = parser.parse_args()
    if args.avx2:  # read when oneDNN and torch load, so set before the first import of torch
        os.environ.update(AVX2_ENV)
    name = "matmul_ab" + ("_avx2" if args.avx2 else "") + ("_loop" if args.loop else "")
    out = args.out or Path(__file__).parent / "results" / f"{name}.json"
    result = run_matmul_ab(args.rounds, print, large=not args.no_large, avx2=args.avx2, stack=not args.loop)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
