"""The native forward against the Hugging Face forward, per architecture, in whole forward steps.

``python -m bench.architectures_ab`` builds, once per machine, a random model in the published
shape of a small checkpoint of each architecture the native forward maps (``native/
architectures.py``) besides the llama family (measured in ``bench.layer_stack_ab`` and the
serving runs), loads it twice on the PyTorch backend, once on the native forward (its default:
the CPU kernels and, where every weight is in panels, the layer stack) and once on the Hugging
Face forward (``native=False``), and times decode steps of ``B`` rows after 256-token prompts
(positions 256 onward, one more each step) and a prefill of two 256-token prompts, the two
backends alternating step by step (the order flipping every round) so both see the same state of
a shared machine. Both decode the same tokens at the same positions, and their first decode
step's logits are checked to agree (a fast wrong forward is no result). Reported per case: the
median of each in ms, the spread (lowest and highest sample), and native over Hugging Face
(below 1: the native forward is faster). fp32, the CPU's threads.

Shapes (random weights, ``torch.manual_seed(0)``, each model's own initialisation):

* gpt2: GPT-2 small (124M): 12 layers, width 768, 12 heads, MLP 3072, GELU (tanh), learned positions;
* gpt_neox: Pythia-160M: 12 layers, width 768, 12 heads, rotary on a quarter of each head,
  parallel residual, GELU (erf);
* opt: OPT-125M: 12 layers, width 768, 12 heads, MLP 3072, ReLU, learned positions (offset 2);
* gpt_bigcode: tiny_starcoder (164M): 20 layers, width 768, 12 query heads and one K/V head;
* gptj: GPT-J's layer (shared norm, rotary by pairs on part of each head) at GPT-2 small's size
  (no GPT-J checkpoint is smaller than 6B): 12 layers, width 768, 12 heads, rotary_dim 32;
* bloom: BLOOM-560M: 24 layers, width 1024, 16 heads, ALiBi, a vocabulary of 250,880.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

CONTEXT = 256
CACHE_DIR = Path.home() / ".cache" / "djl_python" / "bench"
# model_type -> (label, config kwargs), from each checkpoint's config.json (ids and names left out).
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": ("GPT-2 small (124M)", dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257,
                                        activation_function="gelu_new")),
    "gpt_neox": ("Pythia-160M", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                     intermediate_size=3072, max_position_embeddings=2048, vocab_size=50304,
                                     rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True,
                                     hidden_act="gelu", tie_word_embeddings=False)),
    "opt": ("OPT-125M", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, ffn_dim=3072,
                             max_position_embeddings=2048, vocab_size=50272, word_embed_proj_dim=768,
                             activation_function="relu", do_layer_norm_before=True)),
    "gpt_bigcode": ("tiny_starcoder (164M)", dict(n_embd=768, n_layer=20, n_head=12, n_inner=3072,
                                                  n_positions=8192, vocab_size=49152, multi_query=True,
                                                  activation_function="gelu_pytorch_tanh")),
    "gptj": ("GPT-J layer at 124M size", dict(n_embd=768, n_layer=12, n_head=12, rotary_dim=32, n_positions=2048,
                                               vocab_size=50400, activation_function="gelu_new",
                                               tie_word_embeddings=False)),
    "bloom": ("BLOOM-560M", dict(hidden_size=1024, n_layer=24, n_head=16, vocab_size=250880)),
}


def model_folder(model_type: str, log: Callable[[str], None] = print) -> Path:
    """The random model of ``model_type``'s shape, built on first use (a few seconds each) and
    again when :data:`SHAPES` changed (the folder records the shape it was built from)."""
    folder = CACHE_DIR / f"{model_type}-shape-random"
    stamp = folder / "bench_shape.json"
    wanted = json.dumps(SHAPES[model_type][1], sort_keys=True)
    if (folder / "model.safetensors").exists() and stamp.exists() and stamp.read_text() == wanted:
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from bench.large_model import _write_tokenizer

    label, kwargs = SHAPES[model_type]
    log(f"architectures: building random {label}-shaped weights in {folder} (once)")
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kwargs))
    _write_tokenizer(folder, kwargs["vocab_size"])
    model.save_pretrained(folder)
    stamp.write_text(wanted)
    return folder


def _alternate(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Each step's samples in ms, the steps alternating, the order flipping every round."""
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up
        step()
    names = list(steps)
    for i in range(rounds):
        for name in (names if i % 2 else names[::-1]):
            start = time.perf_counter()
            steps[name]()
            samples[name].append((time.perf_counter() - start) * 1000)
    return samples


def _row(what: str, ms: dict[str, list[float]], a: str = "native", b: str = "hf") -> dict[str, Any]:
    """Medians of ``a``'s and ``b``'s samples in ms, their ratio, and each one's lowest and highest."""
    median = {name: statistics.median(s) for name, s in ms.items()}
    return {"what": what, "samples": len(ms[a]), f"{a}_ms": round(median[a], 2), f"{b}_ms": round(median[b], 2),
            f"{a}_over_{b}": round(median[a] / median[b], 3),
            f"{a}_range_ms": [round(min(ms[a]), 2), round(max(ms[a]), 2)],
            f"{b}_range_ms": [round(min(ms[b]), 2), round(max(ms[b]), 2)]}


def time_steps(backends: dict[str, Any], batches: tuple[int, ...], rounds: int,
               agree: Callable[[dict[str, Any]], None], a: str, b: str,
               log: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Decode steps of each of ``batches`` rows after 256-token prompts, then a prefill of two
    256-token prompts, on backends ``a`` and ``b`` alternating (:func:`_alternate`); ``agree`` sees
    both backends' first decode logits and raises when they disagree. One :func:`_row` per case.
    Call under ``torch.inference_mode()``."""
    rows = []
    prompts = [[100 + (7 * s + i) % 20000 for i in range(CONTEXT)] for s in range(max(batches))]
    for batch in batches:
        slots = list(range(batch))
        for backend in backends.values():
            backend.prefill(slots, prompts[:batch])
        agree({name: backend.decode(slots, [1234] * batch, [CONTEXT] * batch) for name, backend in backends.items()})
        position = {name: CONTEXT + 1 for name in backends}

        def decode(name: str) -> Callable[[], None]:
            def step() -> None:
                backends[name].decode(slots, [1234] * batch, [position[name]] * batch)
                position[name] += 1
            return step

        ms = _alternate({name: decode(name) for name in backends}, rounds)
        for backend in backends.values():
            for slot in slots:
                backend.release(slot)
        rows.append(_row(f"decode, {batch} rows", ms, a, b))
        log(rows[-1])

    def prefill(name: str) -> Callable[[], None]:
        def step() -> None:
            backends[name].prefill([0, 1], prompts[:2])
            for slot in (0, 1):
                backends[name].release(slot)
        return step

    rows.append(_row("prefill, 2 x 256 tokens", _alternate({n: prefill(n) for n in backends}, max(5, rounds // 4)),
                     a, b))
    log(rows[-1])
    return rows


def _agree(model_type: str) -> Callable[[dict[str, Any]], None]:
    """The native and Hugging Face forwards' first logits agree (a fast wrong forward is no result)."""
    def check(first: dict[str, Any]) -> None:
        import torch

        if not torch.allclose(first["native"], first["hf"], atol=1e-3, rtol=1e-3):
            raise SystemExit(f"{model_type}: the two forwards disagree (max |diff| "
                             f"{float((first['native'] - first['hf']).abs().max()):.3g})")
    return check


def run_case(model_type: str, batches: tuple[int, ...], rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from djl_python.backends.pytorch.backend import PyTorchBackend

    folder = model_folder(model_type, log)
    positions = CONTEXT + rounds + 66
    backends = {"native": PyTorchBackend.load(folder, max_slots=max(batches), dtype="fp32", n_positions=positions),
                "hf": PyTorchBackend.load(folder, max_slots=max(batches), dtype="fp32", n_positions=positions,
                                          native=False)}
    info = backends["native"].info.extra
    if info["forward"] != "native":
        raise SystemExit(f"{model_type}: the native forward did not load ({info.get('native_skipped')})")
    case: dict[str, Any] = {"shape": SHAPES[model_type][0], "layer_stack": info["layer_stack"],
                            "weights_layout": info["weights_layout"], "results": []}
    with torch.inference_mode():
        case["results"] = time_steps(backends, batches, rounds, _agree(model_type), "native", "hf",
                                     lambda row: log(f"  {model_type} {row}"))
    for backend in backends.values():
        backend.close()
    return case


def main() -> None:
    from bench.__main__ import machine_info, write_result

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--only", default=",".join(SHAPES), help=f"comma-separated subset of {','.join(SHAPES)}")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "architectures_ab.json")
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine_info(), "context": CONTEXT, "rounds": args.rounds}
    for model_type in args.only.split(","):
        result[model_type] = run_case(model_type, (1, 16), args.rounds, print)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
