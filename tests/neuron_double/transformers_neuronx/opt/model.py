"""``transformers_neuronx.opt.model.OPTForSampling``: ``n_positions`` bounded by the position table (8b01968)."""

from transformers_neuronx.base import NeuronModelBase


class OPTForSampling(NeuronModelBase):
    strict_config_kwargs = True

    def __init__(self, config, *args, n_positions=2048, **kwargs):
        largest = max(n_positions) if isinstance(n_positions, list) else n_positions
        if largest > config.max_position_embeddings:
            raise ValueError(f"Sequence length ({largest}) cannot be larger than position embedding's context "
                             f"size ({config.max_position_embeddings})!")
        super().__init__(config, *args, n_positions=n_positions, **kwargs)
