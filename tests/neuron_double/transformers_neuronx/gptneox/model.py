"""``transformers_neuronx.gptneox.model.GPTNeoXForSampling``: the old ``module.PretrainedModel`` generation.

8b01968 .. 1ade6d7: no ``save``/``load``, no context buckets; ``unroll`` and
quantization raise ``NotImplementedError``; ``forward(input_ids, cache_offset,
start_ids)`` masks with ``start_ids`` (``hlo.decoder_attention_mask``).
"""

from transformers_neuronx._runtime import CompiledModel, override_config


class GPTNeoXForSampling(CompiledModel):
    serializable = False

    def __init__(self, config, batch_size=1, amp="f32", tp_degree=2, unroll=None, init_n_active_tokens=None,
                 neuron_config=None, **kwargs):
        override_config(config, kwargs)
        if neuron_config is not None and getattr(neuron_config, "quant", None):
            raise NotImplementedError("Support for quantization is not yet implemented")
        if unroll is not None:
            raise NotImplementedError(f"unroll={unroll} is not yet implemented")
        if init_n_active_tokens is not None:
            raise NotImplementedError(f"init_n_active_tokens={init_n_active_tokens} is not yet implemented")
        n_positions = kwargs.get("n_positions") or config.max_position_embeddings
        self._setup(config, batch_size=batch_size, amp=amp, tp_degree=tp_degree, n_positions=n_positions,
                    context_buckets=[], neuron_config=neuron_config)

    def forward(self, input_ids, cache_offset, start_ids=None):
        cols = list(range(input_ids.shape[1])) if cache_offset is None else [int(c) for c in cache_offset.flatten()]
        starts = [0] * input_ids.shape[0] if start_ids is None else [int(s) for s in start_ids.flatten()]
        return self._static_token_steps(input_ids, cols, starts)
