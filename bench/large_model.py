"""A 1B-class model side by side with vLLM CPU: random weights in Llama-3.2-1B's shape.

Decode of a 1-8B model is bound by memory bandwidth (every step reads every weight), which
SmolLM2-135M's 0.5 GB of fp32 weights hardly shows. This section builds, once per machine, a
model with Llama-3.2-1B's published configuration (16 layers, hidden 2048, MLP 8192, 32 query
and 8 KV heads of 64, vocabulary 128,256, tied embeddings, llama3 rope scaling) and random
weights (``torch.manual_seed(0)``, the model's own initialisation), stored in bf16 as the real
checkpoint is, and served by both servers in each of ``dtypes``: fp32, and bf16, the dtype people
serve it in where the CPU has bf16 arithmetic. Its tokenizer is a word-level one with one
entry per id (``t0`` .. ``t128255``): prompts are token ids and output text is never read, so
only the vocabulary's size matters.

The workload: ``streams`` concurrent streaming clients, one request each, prompts of 32-96 random
ids, 64 new tokens, greedy, ``ignore_eos`` (:func:`bench.peer.run_peer`: each server started on
its own, ours restarted after).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

from bench.workload import Request, Workload, WorkloadSpec

CACHE_DIR = Path.home() / ".cache" / "djl_python" / "bench"
# meta-llama/Llama-3.2-1B's config.json, less its ids and name.
LLAMA_3_2_1B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
    "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "hidden_act": "silu",
    "rope_theta": 500000.0, "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False,
    "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192},
    "bos_token_id": 128000, "eos_token_id": 128001,
}


def model_folder(log: Callable[[str], None] = print) -> Path:
    """The random Llama-3.2-1B-shaped model, built on first use (about 2.5 GB, a minute or two)."""
    folder = CACHE_DIR / "llama-3.2-1b-shape-random"
    if (folder / "model.safetensors").exists():
        return folder
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    log(f"large model: building random Llama-3.2-1B-shaped weights in {folder} (once)")
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**LLAMA_3_2_1B)).to(torch.bfloat16)
    _write_tokenizer(folder, LLAMA_3_2_1B["vocab_size"])
    model.save_pretrained(folder)
    (folder / "generation_config.json").write_text(json.dumps({"do_sample": False, "eos_token_id": 128001}))
    return folder


def _write_tokenizer(folder: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="t128000", eos_token="t128001").save_pretrained(folder)


def workload(streams: int, seed: int = 7) -> Workload:
    """``streams`` requests of 32-96 random prompt ids (below the special ids) and 64 new tokens."""
    rng = random.Random(seed)
    spec = WorkloadSpec(num_requests=streams, prompt_len=(32, 96), new_tokens=(64, 64), seed=seed)
    requests = [Request("", tuple(rng.randrange(1000, 128000) for _ in range(rng.randint(32, 96))), 64)
                for _ in range(streams)]
    return Workload(spec, requests)


def run_large(streams: tuple[int, ...], dtypes: tuple[str, ...], timeout_s: float, log: Callable[[str], None],
              with_peer: bool) -> dict[str, Any]:
    from bench.peer import run_peer

    folder = model_folder(log)
    result = run_peer(folder, workload(sum(streams)), dtypes, streams, 1, timeout_s, log, with_peer=with_peer)
    result["model"] = {"shape": "meta-llama/Llama-3.2-1B",
                       "weights": f"random (seed 0), stored bf16, served {' and '.join(dtypes)}",
                       "parameters": _parameters()}
    return result


def _parameters() -> int:
    c = LLAMA_3_2_1B
    h, kv = c["hidden_size"], c["num_key_value_heads"] * c["head_dim"]
    layer = h * h * 2 + h * kv * 2 + 3 * h * c["intermediate_size"] + 2 * h
    return c["num_hidden_layers"] * layer + c["vocab_size"] * h + h
