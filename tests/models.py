"""Tiny random models of every supported architecture, built on disk in milliseconds.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on an in-memory
corpus, the models are random ``from_config`` instances saved with
``save_pretrained``. Used by the backend, engine, neuron-double and serving tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

# The PyTorch backend's slot cache is built on transformers 5's cache layers; the Neuron stack's
# transformers 4.47 (the compatibility runs, Python 3.9 and 3.10) serves through the Neuron
# backend instead, so tests that load the PyTorch backend skip there, saying so.
PYTORCH_BACKEND_REASON = "the PyTorch backend's slot cache needs transformers 5 (this run has the Neuron stack's 4.x)"


def pytorch_backend_available() -> bool:
    return int(transformers.__version__.split(".")[0]) >= 5


def require_pytorch_backend() -> None:
    """Skip the calling test or fixture where the PyTorch backend cannot load."""
    if not pytorch_backend_available():
        pytest.skip(PYTORCH_BACKEND_REASON)


ARCHS = ("llama", "mistral", "qwen2", "gpt_neox", "gptj", "bloom", "gpt2", "opt", "gpt_bigcode")
# Every forward the PyTorch backend has, as (arch, forward): "kernels", the backend's default (the
# native forward on the CPU kernels); "torch", the native forward on torch ops (as on CUDA), once per
# layer shape (mistral's is llama's); "hf", the Hugging Face forward, the fallback for configs the
# native forward refuses, on a rope, a parallel, a learned-position and an ALiBi model.
FORWARDS = ([(arch, "kernels") for arch in ARCHS] + [(arch, "torch") for arch in ARCHS if arch != "mistral"]
            + [(arch, "hf") for arch in ("llama", "gpt_neox", "gpt2", "bloom")])


def forward_options(forward: str) -> dict[str, bool]:
    """``PyTorchBackend.load``'s options for one of :data:`FORWARDS`' forwards."""
    return {"kernels": {}, "torch": {"cpu_kernels": False}, "hf": {"native": False}}[forward]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
EOS_ID = 2
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Hello world! How are you today? I am fine, thank you.",
    "日本語のテキストと中文文本 and emoji 😀🎉🚀 mixed with ASCII.",
    "def f(x):\n    return x * 2  # code, numbers 0123456789",
] * 20

_HIDDEN, _LAYERS, _HEADS, _VOCAB, _MAXPOS = 64, 2, 4, 512, 256


def dtype_kwargs(dtype: torch.dtype | str) -> dict:
    """``{"dtype": ...}`` for transformers >= 4.56, ``{"torch_dtype": ...}`` before (the Neuron stack's 4.47)."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def make_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer and save it (with a chat template) under ``path``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(path))
    # transformers 5 writes "TokenizersBackend"; 4.x (the Neuron stack) only knows this name.
    cfg_file = path / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_file.write_text(json.dumps(cfg, indent=2))
    return fast


def tiny_config(arch: str, max_positions: int = _MAXPOS):
    """A 2-layer, 64-wide config of ``arch`` whose vocab matches ``make_tokenizer``."""
    common = dict(vocab_size=_VOCAB, bos_token_id=1, eos_token_id=EOS_ID, pad_token_id=3, tie_word_embeddings=False)
    if arch in ("llama", "mistral", "qwen2"):
        kw = dict(hidden_size=_HIDDEN, intermediate_size=128, num_hidden_layers=_LAYERS,
                  num_attention_heads=_HEADS, num_key_value_heads=2, max_position_embeddings=max_positions)
    elif arch == "gpt_neox":
        kw = dict(hidden_size=_HIDDEN, intermediate_size=128, num_hidden_layers=_LAYERS,
                  num_attention_heads=_HEADS, max_position_embeddings=max_positions)
    elif arch == "gptj":
        kw = dict(n_embd=_HIDDEN, n_layer=_LAYERS, n_head=_HEADS, rotary_dim=8, n_positions=max_positions)
    elif arch == "bloom":
        kw = dict(hidden_size=_HIDDEN, n_layer=_LAYERS, n_head=_HEADS)
    elif arch in ("gpt2", "gpt_bigcode"):
        kw = dict(n_embd=_HIDDEN, n_layer=_LAYERS, n_head=_HEADS, n_positions=max_positions)
    elif arch == "opt":
        kw = dict(hidden_size=_HIDDEN, ffn_dim=128, num_hidden_layers=_LAYERS, num_attention_heads=_HEADS,
                  max_position_embeddings=max_positions, word_embed_proj_dim=_HIDDEN)
    else:
        raise ValueError(f"unknown arch {arch}")
    return AutoConfig.for_model(arch, **kw, **common)


def make_tiny_model(arch: str, path: Path, seed: int = 0, max_positions: int = _MAXPOS) -> Path:
    """Write a random ``arch`` model plus tokenizer to ``path`` and return it.

    ``max_positions`` is the model's context window (bloom has none of its own).
    """
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, max_positions), **dtype_kwargs(torch.float32))
    # Random init gives near-uniform logits; scale the output layer so greedy picks are well separated.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    model.generation_config.eos_token_id = EOS_ID
    model.generation_config.pad_token_id = 3
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    make_tokenizer(path)
    return path
