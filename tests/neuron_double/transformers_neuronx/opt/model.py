"""``transformers_neuronx.opt.model.OPTForSampling``: ``n_positions`` bounded by the position table (8b01968).

On 0.9 (8b01968 opt/model.py:79-97) ``context_length_estimate`` is one int, wrapped as
``[context_length_estimate]`` for the context decoder's ``n_positions_list`` and passed as its
``n_active_tokens``; a list there breaks the graph's shapes (decoder.py:248, 377), so the double
refuses it when the model is built. Buckets (``bucket.context_sizes``) arrive in 0.10
(7a30b42 opt/model.py:64-65).
"""

from transformers_neuronx._double import RELEASE
from transformers_neuronx.base import NeuronModelBase


class OPTForSampling(NeuronModelBase):
    strict_config_kwargs = True

    def __init__(self, config, *args, n_positions=2048, context_length_estimate=None, **kwargs):
        largest = max(n_positions) if isinstance(n_positions, list) else n_positions
        if largest > config.max_position_embeddings:
            raise ValueError(f"Sequence length ({largest}) cannot be larger than position embedding's context "
                             f"size ({config.max_position_embeddings})!")
        if RELEASE.commit == "8b01968" and isinstance(context_length_estimate, (list, tuple)):
            raise TypeError("'>' not supported between instances of 'list' and 'int' (OPT on 0.9 takes one "
                            "context_length_estimate, not a list)")
        super().__init__(config, *args, n_positions=n_positions, context_length_estimate=context_length_estimate,
                         **kwargs)
