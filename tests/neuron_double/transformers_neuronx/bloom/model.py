"""``transformers_neuronx.bloom.model.BloomForSampling``: extra kwargs go to ``BloomConfig`` (unknown: KeyError)."""

from transformers_neuronx.base import NeuronModelBase


class BloomForSampling(NeuronModelBase):
    strict_config_kwargs = True
