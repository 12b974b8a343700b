from transformers_neuronx._runtime import NeuronModelBase


class MistralForSampling(NeuronModelBase):
    def __init__(self, config, *, n_positions=2048, batch_size=1, amp="f32", tp_degree=2,
                 context_length_estimate=None, context_unroll=None, unroll=None, neuron_config=None, **kwargs):
        super().__init__(config, n_positions=n_positions, batch_size=batch_size, amp=amp, tp_degree=tp_degree,
                         context_length_estimate=context_length_estimate, unroll=unroll,
                         neuron_config=neuron_config, **kwargs)
