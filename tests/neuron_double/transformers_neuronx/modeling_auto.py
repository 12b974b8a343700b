"""``transformers_neuronx.modeling_auto`` (from 0.10, 7a30b42): dispatch on the checkpoint's ``model_type``.

Note the mapping: ``gpt2`` -> ``GPT2ForSamplingWithContextBroadcasting`` (7a30b42 .. 1ade6d7).
"""

import json
import os

from transformers_neuronx.bloom.model import BloomForSampling
from transformers_neuronx.gpt2.model import GPT2ForSamplingWithContextBroadcasting
from transformers_neuronx.gptj.model import GPTJForSampling
from transformers_neuronx.gptneox.model import GPTNeoXForSampling
from transformers_neuronx.llama.model import LlamaForSampling
from transformers_neuronx.mistral.model import MistralForSampling
from transformers_neuronx.mixtral.model import MixtralForSampling
from transformers_neuronx.opt.model import OPTForSampling

NEURON_MODEL_FOR_CAUSAL_LM_MAPPING = {
    "bloom": BloomForSampling,
    "code_llama": LlamaForSampling,
    "gpt2": GPT2ForSamplingWithContextBroadcasting,
    "gpt_neox": GPTNeoXForSampling,
    "gptj": GPTJForSampling,
    "llama": LlamaForSampling,
    "mistral": MistralForSampling,
    "mixtral": MixtralForSampling,
    "opt": OPTForSampling,
}


class NeuronAutoModelForCausalLM:
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        with open(os.path.join(pretrained_model_name_or_path, "config.json")) as f:
            model_type = json.load(f)["model_type"]
        if model_type not in NEURON_MODEL_FOR_CAUSAL_LM_MAPPING:
            raise AssertionError(f"The configuration model type '{model_type}' is not supported by Neuron")
        return NEURON_MODEL_FOR_CAUSAL_LM_MAPPING[model_type].from_pretrained(
            pretrained_model_name_or_path, *model_args, **kwargs)
