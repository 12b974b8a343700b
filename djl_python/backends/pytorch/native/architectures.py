"""Which Hugging Face decoder architectures the native forward runs, and how each one's
weights map onto its one layer shape.

The native forward (:mod:`.decoder`) runs one decoder layer shape, set per model by a
:class:`Recipe`, with ``x`` the residual stream:

    h = norm(x)                          RMSNorm (llama family) or LayerNorm with bias
    a = o(attention(rope(qkv(h))))       qkv's rows: the Q heads, then the K heads, then the V heads
    sequential:   x += a;  x += mlp(mlp_norm(x))              llama, mistral, qwen2, gpt2, gpt_bigcode, opt, bloom
    parallel:     x += a + mlp(mlp_norm(x))  (x before a)     gpt_neox (use_parallel_residual)
    shared norm:  x += a + mlp(h)                             gptj
    mlp(h) = down(silu(gate(h)) * up(h))  or  down(act(up(h))), act GELU (tanh or erf) or ReLU

Every architecture is mapped onto that shape once, when its weights are read:

* Layouts: GPT-2's Conv1D weights are transposed; a QKV stored per head (``[q_h, k_h, v_h]``
  for each head: gpt_neox, gpt_bigcode without multi-query) is regrouped into Q, K, V.
* Rotary: the rope (kernel or torch) rotates a whole head by ``rotate_half``, dimension ``j``
  with ``j + d/2``. GPT-NeoX's partial rotary (the first ``r`` dimensions, ``rotate_half``
  within them) and GPT-J's (the first ``r``, pairs ``(2i, 2i + 1)``) become that by permuting
  the dimensions of every q and k head the same way in the weights: rotary pair ``i`` moves to
  ``(i, i + d/2)``, and the dimensions not rotated move to the columns whose cos is 1 and sin 0,
  which the rope leaves exactly as they are (``x * 1 + y * 0``). Attention reads q and k only
  through their dot products, which a common permutation leaves the same (up to summation
  order); v and the attention output are not permuted. The KV cache holds the permuted keys.
* Learned absolute positions (gpt2, gpt_bigcode, opt with its offset of 2) are added to the
  token embedding, as their models do; their rope tables are the identity (cos 1, sin 0).
* ALiBi (bloom): attention adds ``slope[head] * j`` to each score at key column ``j`` (BLOOM's
  bias, up to the per-query constant softmax ignores); rope tables the identity. BLOOM's norm of
  the embedding runs before the first layer.

Invariant: for every config :func:`native_support` accepts, :func:`read` returns the weights
with which the native forward computes what the Hugging Face forward computes, up to float
rounding (tests/backends/test_native_architectures.py holds each architecture's logits, and the
variants the mapping branches on, to the Hugging Face forward's on random norms and biases;
tests/backends/test_pytorch_backend.py its greedy output to ``generate()``'s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from transformers.pytorch_utils import Conv1D

LLAMA_FAMILY = frozenset({"llama", "mistral", "qwen2"})
# Rope types whose cos/sin depend on the position only (one table serves every step).
_TABLE_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn"})
# Hugging Face activation names (ACT2FN) the kernels compute, by the kernel's name for them.
ACTIVATIONS: dict[str, str] = {"gelu": "gelu_erf", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                               "gelu_fast": "gelu_tanh", "relu": "relu"}

Norm = Literal["rms", "layer"]
Residual = Literal["sequential", "parallel", "shared_norm"]


@dataclass(frozen=True)
class Recipe:
    """A model's layer shape (module docstring). ``activation``: a Hugging Face ACT2FN name;
    ``"silu"`` means the SiLU-gated MLP, any other is one of :data:`ACTIVATIONS`."""

    norm: Norm
    activation: str
    residual: Residual

    @property
    def gated(self) -> bool:
        return self.activation == "silu"

    @property
    def kernel_activation(self) -> str:
        """The CPU kernels' name for the activation: ``"silu"`` (gated) or one of :data:`ACTIVATIONS`' values."""
        return "silu" if self.gated else ACTIVATIONS[self.activation]


@dataclass(frozen=True)
class Weight:
    """A linear weight before the native forward takes it: ``modules``' weights stacked by
    output rows (a Conv1D's transposed to ``[out, in]``), then the rows put in ``order`` (row
    ``i`` of the result is row ``order[i]`` of the stack) when it is given."""

    modules: tuple[torch.nn.Module, ...]
    order: torch.Tensor | None = None

    def rows(self) -> torch.Tensor:
        parts = [m.weight.t() if isinstance(m, Conv1D) else m.weight for m in self.modules]
        stacked = torch.cat(parts) if len(parts) > 1 else parts[0]
        return stacked if self.order is None else stacked.index_select(0, self.order)

    def bias(self) -> torch.Tensor | None:
        """The modules' biases stacked and ordered as the rows (zeros for a module without one),
        ``None`` when none has one."""
        if all(getattr(m, "bias", None) is None for m in self.modules):
            return None
        parts = [m.bias if m.bias is not None else m.weight.new_zeros(_out_features(m)) for m in self.modules]
        stacked = torch.cat(parts) if len(parts) > 1 else parts[0]
        return stacked if self.order is None else stacked.index_select(0, self.order)


@dataclass(frozen=True)
class LayerWeights:
    """One decoder layer as the native forward runs it. ``up``: gate then up rows when the MLP
    is gated. ``mlp_norm`` is ``None`` where the MLP reads the attention's norm (shared norm)."""

    attn_norm: torch.Tensor
    attn_norm_bias: torch.Tensor | None
    qkv: Weight
    o: Weight
    mlp_norm: torch.Tensor | None
    mlp_norm_bias: torch.Tensor | None
    up: Weight
    down: Weight


@dataclass(frozen=True)
class ModelWeights:
    """Everything the native forward reads from a Hugging Face model. ``positions``: the learned
    position table, row ``p + position_offset`` for position ``p`` (``None`` with rope);
    ``cos``/``sin``: the rope tables ``[n_positions, head_dim]`` in the model dtype; ``alibi``: one
    float32 slope per query head (``None`` without ALiBi); ``embed_norm``: the norm's weight and
    bias applied to the embedding before the first layer (``None`` without)."""

    recipe: Recipe
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    scale: float
    embed: torch.Tensor
    positions: torch.Tensor | None
    position_offset: int
    layers: list[LayerWeights]
    final_norm: torch.Tensor
    final_norm_bias: torch.Tensor | None
    lm_head: Weight
    cos: torch.Tensor
    sin: torch.Tensor
    alibi: torch.Tensor | None = None
    embed_norm: tuple[torch.Tensor, torch.Tensor | None] | None = None


def native_support(config: Any) -> str | None:
    """``None`` when the native forward implements ``config`` exactly, else the reason it does not."""
    model_type = config.model_type
    if model_type not in _READERS:
        return f"model_type {model_type!r} is not one of {sorted(_READERS)}"
    activation = _activation(config)
    if model_type in LLAMA_FAMILY:
        if activation != "silu":
            return f"hidden_act {activation!r} (only silu)"
    elif activation not in ACTIVATIONS:
        return f"activation {activation!r} (one of {sorted(ACTIVATIONS)})"
    rope = getattr(config, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", "default") if isinstance(rope, dict) else "default"
    if model_type in LLAMA_FAMILY | {"gpt_neox"} and rope_type not in _TABLE_ROPE_TYPES:
        return f"rope_type {rope_type!r} depends on the sequence length (only {sorted(_TABLE_ROPE_TYPES)})"
    if model_type in LLAMA_FAMILY | {"gpt_neox", "gptj"}:
        heads = getattr(config, "num_attention_heads", None) or config.n_head
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        if head_dim % 2:
            return f"head_dim {head_dim} is odd (the rope pairs dimension i with i + head_dim / 2)"
    if model_type == "gptj":
        rotary, head_dim = config.rotary_dim, config.n_embd // config.n_head
        if rotary is None or rotary % 2 or rotary > head_dim:
            return f"rotary_dim {rotary} (GPT-J's forward needs an even rotary_dim within a head of {head_dim})"
    if model_type in LLAMA_FAMILY:
        # Llama's own forward rotates whole heads: a partial factor there is a config it does not run.
        partial = rope.get("partial_rotary_factor") if isinstance(rope, dict) else None
        partial = partial if partial is not None else getattr(config, "partial_rotary_factor", None)
        if partial is not None and float(partial) != 1.0:
            return f"partial_rotary_factor {partial} (the llama forward rotates whole heads)"
        if getattr(config, "pretraining_tp", 1) not in (None, 1):
            return "pretraining_tp > 1"
        if "sliding_attention" in (getattr(config, "layer_types", None) or ()) and model_type == "qwen2":
            return "sliding-window layers (use_sliding_window)"
    if getattr(config, "add_cross_attention", False):
        return "add_cross_attention (an encoder-decoder use)"
    if model_type == "bloom":
        if getattr(config, "pretraining_tp", 1) not in (None, 1) and config.slow_but_exact:
            return "pretraining_tp > 1 with slow_but_exact (sliced matmuls)"
        if config.apply_residual_connection_post_layernorm:
            return "apply_residual_connection_post_layernorm (the residual taken after the norm)"
    if model_type == "gpt2" and config.scale_attn_by_inverse_layer_idx:
        return "scale_attn_by_inverse_layer_idx (a scale per layer)"
    if model_type == "opt":
        if not config.do_layer_norm_before:
            return "do_layer_norm_before=False (norms after each block)"
        if config.word_embed_proj_dim != config.hidden_size:
            return "word_embed_proj_dim != hidden_size (projected embeddings)"
        if getattr(config, "_remove_final_layer_norm", False) or not config.layer_norm_elementwise_affine:
            return "no final or affine layer norm"
    return None


def recipe(config: Any) -> Recipe:
    """The layer shape of a config :func:`native_support` accepts."""
    model_type = config.model_type
    if model_type in LLAMA_FAMILY:
        return Recipe("rms", "silu", "sequential")
    if model_type == "gptj":
        return Recipe("layer", _activation(config), "shared_norm")
    parallel = model_type == "gpt_neox" and config.use_parallel_residual
    return Recipe("layer", _activation(config), "parallel" if parallel else "sequential")


def unwidened_parameters(config: Any) -> int:
    """How many of the model's parameters the native forward keeps in the model dtype when it
    widens the rest to fp32 (:mod:`.linear`): the embedding, a learned position table, and the
    norms' weights and biases (the memory plan counts the rest widened)."""
    text = config.get_text_config()
    shape = recipe(config)
    count = text.vocab_size * text.hidden_size
    if config.model_type in ("gpt2", "gpt_bigcode"):
        count += text.n_positions * text.hidden_size
    elif config.model_type == "opt":
        count += (text.max_position_embeddings + 2) * text.hidden_size  # OPT's offset of 2
    norms = (1 if shape.residual == "shared_norm" else 2) * text.num_hidden_layers + 1
    norms += config.model_type == "bloom"  # the embedding's norm
    return count + norms * text.hidden_size * (2 if shape.norm == "layer" else 1)


def read(model: Any, n_positions: int) -> ModelWeights:
    """The weights of ``model`` (a loaded causal LM whose config :func:`native_support`
    accepts) as the native forward runs them, with rope tables for ``n_positions``."""
    reason = native_support(model.config)
    if reason is not None:
        raise ValueError(f"the native forward cannot run this model: {reason}")
    return _READERS[model.config.model_type](model, n_positions)


def _activation(config: Any) -> str:
    if config.model_type == "bloom":  # BloomGelu: the tanh approximation, written out
        return "gelu_pytorch_tanh"
    return getattr(config, "hidden_act", None) or getattr(config, "activation_function", None) or "silu"


def _out_features(module: torch.nn.Module) -> int:
    return module.nf if isinstance(module, Conv1D) else module.out_features


def _one(values: list[float], what: str) -> float:
    """The one value every layer has; ``ValueError`` when layers differ (one kernel call runs all)."""
    if len(set(values)) != 1:
        raise ValueError(f"the native forward cannot run this model: its layers' {what} differ ({sorted(set(values))})")
    return values[0]


def rope_order(head_dim: int, rotary: int, interleaved: bool) -> list[int]:
    """Where each dimension of a rotated head comes from (module docstring): ``rotary`` dims
    rotated as pairs ``(i, i + rotary/2)``, or ``(2i, 2i + 1)`` when ``interleaved``, the rest
    passed through. The identity for a whole head rotated by ``rotate_half``."""
    half, pairs = head_dim // 2, rotary // 2
    low = [2 * i if interleaved else i for i in range(pairs)]
    high = [2 * i + 1 if interleaved else i + pairs for i in range(pairs)]
    rest = list(range(rotary, head_dim))
    return low + rest[: half - pairs] + high + rest[half - pairs :]


def _qkv_order(heads: int, kv: int, d: int, per_head: bool, rope: list[int]) -> torch.Tensor | None:
    """The row order turning a QKV stack (grouped Q, K, V; or per head) into grouped Q, K, V
    with each q and k head's dimensions in ``rope`` order; ``None`` when that is the identity."""
    def source(block: int, head: int, j: int) -> int:
        if per_head:
            return (head * 3 + block) * d + j
        return (0 if block == 0 else heads * d + (block - 1) * kv * d) + head * d + j
    order = [source(0, h, rope[j]) for h in range(heads) for j in range(d)]
    order += [source(1, h, rope[j]) for h in range(kv) for j in range(d)]
    order += [source(2, h, j) for h in range(kv) for j in range(d)]
    if order == list(range(len(order))):
        return None
    return torch.tensor(order, dtype=torch.long)


def _tables(low_cos: torch.Tensor, high_cos: torch.Tensor, low_sin: torch.Tensor, high_sin: torch.Tensor,
            head_dim: int, n_positions: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-head rope tables ``[n_positions, head_dim]``: pair ``i``'s cos/sin at columns ``i``
    (``low_*``) and ``i + head_dim/2`` (``high_*``), cos 1 and sin 0 elsewhere."""
    half, pairs = head_dim // 2, low_cos.shape[-1]
    cos = torch.ones((n_positions, head_dim), dtype=dtype, device=device)
    sin = torch.zeros((n_positions, head_dim), dtype=dtype, device=device)
    cos[:, :pairs], cos[:, half : half + pairs] = low_cos, high_cos
    sin[:, :pairs], sin[:, half : half + pairs] = low_sin, high_sin
    return cos.contiguous(), sin.contiguous()


def _identity_tables(head_dim: int, n_positions: int, embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    empty = embed.new_empty((n_positions, 0))
    return _tables(empty, empty, empty, empty, head_dim, n_positions, embed.dtype, embed.device)


def _rotate_half_tables(rotary_emb: torch.nn.Module, head_dim: int, n_positions: int,
                        embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The model's own rope module's tables (every rope scaling it supports gives its own
    cos/sin), placed for a whole head; with the rotary width."""
    positions = torch.arange(n_positions, device=embed.device)
    cos, sin = rotary_emb(embed.new_empty(1), positions[None, :])  # [1, P, r], rotate_half layout
    cos, sin = cos[0], sin[0]
    rotary = cos.shape[-1]
    if rotary % 2 or rotary > head_dim:
        raise ValueError(f"the native forward cannot run this model: rotary tables {rotary} wide, a head {head_dim}")
    pairs = rotary // 2
    cos_t, sin_t = _tables(cos[:, :pairs], cos[:, pairs:], sin[:, :pairs], sin[:, pairs:], head_dim, n_positions,
                           embed.dtype, embed.device)
    return cos_t, sin_t, rotary


def _layer_norm(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    return module.weight, getattr(module, "bias", None)


def _read_llama(model: Any, n_positions: int) -> ModelWeights:
    """llama, mistral and qwen2 (the same layer; qwen2's q, k and v carry biases)."""
    inner, config = model.model, model.config
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    d = getattr(config, "head_dim", None) or config.hidden_size // heads
    cos, sin, rotary = _rotate_half_tables(inner.rotary_emb, d, n_positions, inner.embed_tokens.weight)
    if rotary != d:  # native_support refuses the configs known to do this
        raise ValueError(f"the native forward cannot run this model: its rotary tables are {rotary} wide, a head {d}")
    layers = [LayerWeights(
        attn_norm=layer.input_layernorm.weight, attn_norm_bias=None,
        qkv=Weight((layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)),
        o=Weight((layer.self_attn.o_proj,)),
        mlp_norm=layer.post_attention_layernorm.weight, mlp_norm_bias=None,
        up=Weight((layer.mlp.gate_proj, layer.mlp.up_proj)), down=Weight((layer.mlp.down_proj,)),
    ) for layer in inner.layers]
    return ModelWeights(
        recipe=recipe(config), heads=heads, kv_heads=kv, head_dim=d,
        eps=inner.norm.variance_epsilon, scale=_one([layer.self_attn.scaling for layer in inner.layers], "scaling"),
        embed=inner.embed_tokens.weight, positions=None, position_offset=0, layers=layers,
        final_norm=inner.norm.weight, final_norm_bias=None, lm_head=Weight((model.lm_head,)), cos=cos, sin=sin)


def _read_gpt_neox(model: Any, n_positions: int) -> ModelWeights:
    inner, config = model.gpt_neox, model.config
    heads = config.num_attention_heads
    d = config.hidden_size // heads
    cos, sin, rotary = _rotate_half_tables(inner.rotary_emb, d, n_positions, inner.embed_in.weight)
    order = _qkv_order(heads, heads, d, per_head=True, rope=rope_order(d, rotary, interleaved=False))
    layers = [LayerWeights(
        *_layer_norm(layer.input_layernorm), qkv=Weight((layer.attention.query_key_value,), order),
        o=Weight((layer.attention.dense,)), mlp_norm=layer.post_attention_layernorm.weight,
        mlp_norm_bias=layer.post_attention_layernorm.bias, up=Weight((layer.mlp.dense_h_to_4h,)),
        down=Weight((layer.mlp.dense_4h_to_h,)),
    ) for layer in inner.layers]
    norms = [n for layer in inner.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    return ModelWeights(
        recipe=recipe(config), heads=heads,
        kv_heads=heads, head_dim=d, eps=_one([n.eps for n in [*norms, inner.final_layer_norm]], "norm eps"),
        scale=_one([layer.attention.scaling for layer in inner.layers], "scaling"), embed=inner.embed_in.weight,
        positions=None, position_offset=0, layers=layers, final_norm=inner.final_layer_norm.weight,
        final_norm_bias=inner.final_layer_norm.bias, lm_head=Weight((model.get_output_embeddings(),)), cos=cos, sin=sin)


def _read_gptj(model: Any, n_positions: int) -> ModelWeights:
    from transformers.models.gptj.modeling_gptj import create_sinusoidal_positions

    inner, config = model.transformer, model.config
    heads = config.n_head
    d = config.n_embd // heads
    rotary = config.rotary_dim  # native_support: even, within a head
    embed = inner.wte.weight
    sincos = create_sinusoidal_positions(n_positions, rotary).to(device=embed.device, dtype=embed.dtype)
    sin_half, cos_half = sincos[:, : rotary // 2], sincos[:, rotary // 2 :]  # pair i's, for both of its dims
    cos, sin = _tables(cos_half, cos_half, sin_half, sin_half, d, n_positions, embed.dtype, embed.device)
    order = _qkv_order(heads, heads, d, per_head=False, rope=rope_order(d, rotary, interleaved=True))
    layers = [LayerWeights(
        *_layer_norm(layer.ln_1), qkv=Weight((layer.attn.q_proj, layer.attn.k_proj, layer.attn.v_proj), order),
        o=Weight((layer.attn.out_proj,)), mlp_norm=None, mlp_norm_bias=None, up=Weight((layer.mlp.fc_in,)),
        down=Weight((layer.mlp.fc_out,)),
    ) for layer in inner.h]
    return ModelWeights(
        recipe=recipe(config), heads=heads, kv_heads=heads, head_dim=d,
        eps=_one([n.eps for n in [*(layer.ln_1 for layer in inner.h), inner.ln_f]], "norm eps"),
        scale=_one([layer.attn.scaling for layer in inner.h], "scaling"), embed=embed, positions=None,
        position_offset=0, layers=layers, final_norm=inner.ln_f.weight, final_norm_bias=inner.ln_f.bias,
        lm_head=Weight((model.lm_head,)), cos=cos, sin=sin)


def _read_gpt2_like(model: Any, n_positions: int) -> ModelWeights:
    """gpt2 (Conv1D weights) and gpt_bigcode (Linear; one K/V head when multi-query, else a
    QKV stored per head)."""
    inner, config = model.transformer, model.config
    heads = config.n_head
    d = config.n_embd // heads
    multi_query = getattr(config, "multi_query", False)
    kv = 1 if multi_query else heads
    per_head = config.model_type == "gpt_bigcode" and not multi_query
    order = _qkv_order(heads, kv, d, per_head=per_head, rope=list(range(d)))
    layers = [LayerWeights(
        *_layer_norm(layer.ln_1), qkv=Weight((layer.attn.c_attn,), order), o=Weight((layer.attn.c_proj,)),
        mlp_norm=layer.ln_2.weight, mlp_norm_bias=layer.ln_2.bias, up=Weight((layer.mlp.c_fc,)),
        down=Weight((layer.mlp.c_proj,)),
    ) for layer in inner.h]
    norms = [n for layer in inner.h for n in (layer.ln_1, layer.ln_2)]
    embed = inner.wte.weight
    cos, sin = _identity_tables(d, n_positions, embed)
    return ModelWeights(
        recipe=recipe(config), heads=heads, kv_heads=kv, head_dim=d,
        eps=_one([n.eps for n in [*norms, inner.ln_f]], "norm eps"),
        scale=_one([layer.attn.scaling for layer in inner.h], "scaling"), embed=embed,
        positions=_position_table(inner.wpe.weight, n_positions, 0), position_offset=0, layers=layers,
        final_norm=inner.ln_f.weight, final_norm_bias=inner.ln_f.bias, lm_head=Weight((model.lm_head,)),
        cos=cos, sin=sin)


def _read_opt(model: Any, n_positions: int) -> ModelWeights:
    inner, config = model.model.decoder, model.config
    heads = config.num_attention_heads
    d = config.hidden_size // heads
    layers = [LayerWeights(
        *_layer_norm(layer.self_attn_layer_norm),
        qkv=Weight((layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)),
        o=Weight((layer.self_attn.out_proj,)), mlp_norm=layer.final_layer_norm.weight,
        mlp_norm_bias=layer.final_layer_norm.bias, up=Weight((layer.fc1,)), down=Weight((layer.fc2,)),
    ) for layer in inner.layers]
    norms = [n for layer in inner.layers for n in (layer.self_attn_layer_norm, layer.final_layer_norm)]
    embed = inner.embed_tokens.weight
    cos, sin = _identity_tables(d, n_positions, embed)
    offset = inner.embed_positions.offset
    return ModelWeights(
        recipe=recipe(config), heads=heads, kv_heads=heads, head_dim=d,
        eps=_one([n.eps for n in [*norms, inner.final_layer_norm]], "norm eps"),
        # OPT scales q before attention (and attention by 1.0): the same scale, applied in attention.
        scale=_one([layer.self_attn.scaling for layer in inner.layers], "scaling"), embed=embed,
        positions=_position_table(inner.embed_positions.weight, n_positions, offset), position_offset=offset,
        layers=layers, final_norm=inner.final_layer_norm.weight, final_norm_bias=inner.final_layer_norm.bias,
        lm_head=Weight((model.lm_head,)), cos=cos, sin=sin)


def _position_table(table: torch.Tensor, n_positions: int, offset: int) -> torch.Tensor:
    if table.shape[0] < n_positions + offset:
        raise ValueError(f"the native forward cannot run this model: its position table has "
                         f"{table.shape[0] - offset} positions, {n_positions} asked")
    return table


def _read_bloom(model: Any, n_positions: int) -> ModelWeights:
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    inner, config = model.transformer, model.config
    heads = config.n_head
    d = config.hidden_size // heads
    order = _qkv_order(heads, heads, d, per_head=True, rope=list(range(d)))
    layers = [LayerWeights(
        *_layer_norm(layer.input_layernorm), qkv=Weight((layer.self_attention.query_key_value,), order),
        o=Weight((layer.self_attention.dense,)), mlp_norm=layer.post_attention_layernorm.weight,
        mlp_norm_bias=layer.post_attention_layernorm.bias, up=Weight((layer.mlp.dense_h_to_4h,)),
        down=Weight((layer.mlp.dense_4h_to_h,)),
    ) for layer in inner.h]
    norms = [n for layer in inner.h for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    embed = inner.word_embeddings.weight
    cos, sin = _identity_tables(d, n_positions, embed)
    return ModelWeights(
        recipe=recipe(config), heads=heads, kv_heads=heads, head_dim=d,
        eps=_one([n.eps for n in [*norms, inner.ln_f, inner.word_embeddings_layernorm]], "norm eps"),
        scale=_one([layer.self_attention.inv_norm_factor for layer in inner.h], "scaling"), embed=embed,
        positions=None, position_offset=0, layers=layers, final_norm=inner.ln_f.weight,
        final_norm_bias=inner.ln_f.bias, lm_head=Weight((model.lm_head,)), cos=cos, sin=sin,
        alibi=_get_alibi_slopes(heads, embed.device).float().contiguous(),
        embed_norm=_layer_norm(inner.word_embeddings_layernorm))


_READERS: dict[str, Callable[[Any, int], ModelWeights]] = {
    "llama": _read_llama, "mistral": _read_llama, "qwen2": _read_llama, "gpt_neox": _read_gpt_neox,
    "gptj": _read_gptj, "gpt2": _read_gpt2_like, "gpt_bigcode": _read_gpt2_like, "opt": _read_opt, "bloom": _read_bloom,
}
