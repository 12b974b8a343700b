from transformers_neuronx._runtime import PretrainedModel


class GPTJForSampling(PretrainedModel):
    """Old-generation class: no save/load, no context_length_estimate, ``forward(input_ids, cache_offset, ...)``."""

    def __init__(self, config, batch_size=1, amp="f32", tp_degree=2, unroll=None, init_n_active_tokens=None,
                 neuron_config=None, **kwargs):
        super().__init__(config, batch_size=batch_size, amp=amp, tp_degree=tp_degree, unroll=unroll,
                         neuron_config=neuron_config, **kwargs)

    def forward(self, input_ids, cache_offset, start_ids=None):
        return self._run(input_ids, cache_offset, start_ids)
