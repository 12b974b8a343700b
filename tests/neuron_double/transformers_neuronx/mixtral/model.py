"""``transformers_neuronx.mixtral.model.MixtralForSampling`` (from 0.9, 8b01968)."""

from transformers_neuronx._double import RELEASE
from transformers_neuronx.base import NeuronModelBase

if "mixtral" not in RELEASE.models:
    raise ImportError("transformers_neuronx.mixtral does not exist in this release")


class MixtralForSampling(NeuronModelBase):
    pass
