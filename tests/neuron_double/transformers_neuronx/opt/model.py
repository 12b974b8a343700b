"""``transformers_neuronx.opt.model.OPTForSampling``: ``n_positions`` bounded by the position table (8b01968).

On 0.9 (8b01968 opt/model.py:79-97) ``context_length_estimate`` is one int, wrapped as
``[context_length_estimate]`` for the context decoder's ``n_positions_list`` and passed as its
``n_active_tokens`` (:86). Nothing checks it in ``__init__``; a list fails in ``to_neuron()``,
when ``load_weights`` (:139) builds the context graph's shapes (decoder.py:331, 422;
layers/transformer.py:66), after the token graph's weights are loaded. The exact exception comes
from torch_neuronx's shape code, which is not public; the double raises a ``TypeError`` there.
Buckets (``bucket.context_sizes``) arrive in 0.10 (7a30b42 opt/model.py:64-65).

Not emulated: real 0.9 OPT prefills through its token graph one column at a time
(decoder.py:368-405); the double prefills through context buckets as later releases do.
"""

from transformers_neuronx._double import RELEASE, record
from transformers_neuronx.base import NeuronModelBase


class OPTForSampling(NeuronModelBase):
    strict_config_kwargs = True

    def __init__(self, config, *args, n_positions=2048, context_length_estimate=None, **kwargs):
        largest = max(n_positions) if isinstance(n_positions, list) else n_positions
        if largest > config.max_position_embeddings:
            raise ValueError(f"Sequence length ({largest}) cannot be larger than position embedding's context "
                             f"size ({config.max_position_embeddings})!")
        self._single_estimate_violated = RELEASE.commit == "8b01968" and isinstance(context_length_estimate,
                                                                                    (list, tuple))
        super().__init__(config, *args, n_positions=n_positions, context_length_estimate=context_length_estimate,
                         **kwargs)

    def to_neuron(self):
        if self._single_estimate_violated:
            record("to_neuron", type(self).__name__, "context graph shapes from a list")
            raise TypeError("OPTForSampling (0.9) builds its context graph for one context_length_estimate; "
                            "got a list (the double's stand-in for torch_neuronx's shape error)")
        return super().to_neuron()
