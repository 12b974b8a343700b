"""``transformers_neuronx.llama.model.LlamaForSampling`` (a ``NeuronModelBase``; extra kwargs are ignored)."""

from transformers_neuronx.base import NeuronModelBase


class LlamaForSampling(NeuronModelBase):
    pass
