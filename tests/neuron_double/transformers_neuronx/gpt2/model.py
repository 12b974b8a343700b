from transformers_neuronx._runtime import NeuronModelBase


class GPT2ForSamplingWithContextBroadcasting(NeuronModelBase):
    # n_positions arrives through **kwargs, as in the real GPT2Config.
    def __init__(self, config, batch_size=1, prompt_batch_size=1, amp="f32", tp_degree=2, unroll=None,
                 context_length_estimate=None, context_unroll=1, neuron_config=None, reorder_cache=False, **kwargs):
        super().__init__(config, batch_size=batch_size, amp=amp, tp_degree=tp_degree, unroll=unroll,
                         context_length_estimate=context_length_estimate, neuron_config=neuron_config, **kwargs)
