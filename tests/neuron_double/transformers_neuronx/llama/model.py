"""``transformers_neuronx.llama.model.LlamaForSampling`` (a ``NeuronModelBase``; extra kwargs are ignored)."""

from transformers_neuronx._double import RELEASE
from transformers_neuronx.base import NeuronModelBase


class LlamaForSampling(NeuronModelBase):
    # aws-neuron/transformers-neuronx#79: static batching with non-zero start_ids answers NaN before
    # 0.11 (fixed in Neuron 2.19).
    masked_static_nan = RELEASE.label in ("0.9", "0.10-early", "0.10-late")
