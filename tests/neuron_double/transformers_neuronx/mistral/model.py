"""``transformers_neuronx.mistral.model.MistralForSampling`` (from 0.9, 8b01968)."""

from transformers_neuronx._double import RELEASE
from transformers_neuronx.base import NeuronModelBase

if "mistral" not in RELEASE.models:
    raise ImportError("transformers_neuronx.mistral does not exist in this release")


class MistralForSampling(NeuronModelBase):
    pass
