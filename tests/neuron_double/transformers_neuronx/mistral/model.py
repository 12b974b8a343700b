"""``transformers_neuronx.mistral.model.MistralForSampling`` (from 0.9, 8b01968)."""

from transformers_neuronx._double import RELEASE
from transformers_neuronx.base import NeuronModelBase

if "mistral" not in RELEASE.models:
    raise ImportError("transformers_neuronx.mistral does not exist in this release")


class MistralForSampling(NeuronModelBase):
    # aws-neuron/transformers-neuronx#79 (NaN from static batching with non-zero start_ids) reports
    # Llama; Mistral's graph is its own (8b01968 mistral/hlo.py, sliding-window mask), and no source
    # says it answers NaN, so the double does not make it.
    pass
