"""``transformers_neuronx.gptj.model.GPTJForSampling``: the old ``module.PretrainedModel`` generation.

8b01968 .. 1ade6d7 ``gptj/model.py``: no ``save``/``load``, no context buckets,
``forward(input_ids, cache_offset, start_ids=None)`` runs one column at a time and
**ignores start_ids**: ``gptj/hlo.py`` builds ``decoder_attention_mask_legacy(cache_offset)``,
a causal mask only, so left padding is attended. Quantization raises.
"""

from transformers_neuronx._runtime import CompiledModel, override_config


class GPTJForSampling(CompiledModel):
    serializable = False
    causal_mask_only = True

    def __init__(self, config, batch_size=1, amp="f32", tp_degree=2, unroll=None, init_n_active_tokens=None,
                 neuron_config=None, **kwargs):
        override_config(config, kwargs)
        n_positions = kwargs.get("n_positions") or config.n_positions
        if n_positions > config.n_positions:
            raise ValueError(f"Sequence length ({n_positions}) cannot be larger than position embedding's context "
                             f"size ({config.n_positions})!")
        if neuron_config is not None and getattr(neuron_config, "quant", None):
            raise NotImplementedError("Support for quantization is not yet implemented")
        if init_n_active_tokens is not None:
            raise NotImplementedError(f"init_n_active_tokens={init_n_active_tokens}")
        self._setup(config, batch_size=batch_size, amp=amp, tp_degree=tp_degree, n_positions=n_positions,
                    context_buckets=[], neuron_config=neuron_config)

    def forward(self, input_ids, cache_offset, start_ids=None):
        cols = list(range(input_ids.shape[1])) if cache_offset is None else [int(c) for c in cache_offset.flatten()]
        return self._static_token_steps(input_ids, cols, [0] * input_ids.shape[0])
