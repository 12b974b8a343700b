"""``transformers_neuronx.mistral.model.MistralForSampling`` (from 0.9, 8b01968)."""

from transformers_neuronx._double import RELEASE
from transformers_neuronx.base import NeuronModelBase

if "mistral" not in RELEASE.models:
    raise ImportError("transformers_neuronx.mistral does not exist in this release")


class MistralForSampling(NeuronModelBase):
    # aws-neuron/transformers-neuronx#79 (NaN from static batching with non-zero start_ids) reports
    # Llama; Mistral's graph is its own (8b01968 mistral/hlo.py, sliding-window mask), and no source
    # says it answers NaN, so the double does not make it.

    def _cb_prefill(self, input_ids, cache_ids, seq_ids):
        if RELEASE.label == "0.10-late":
            # 0623de2 mistral/model.py:68-72 keeps num_processed_tokens per row (torch.zeros(batch_size))
            # under continuous batching and :151 adds last_token_id, which has one entry per prefilled
            # row (base.py:281-282): fewer rows than the batch fail on the shapes, and one row sends a
            # batch-wide window start into a context graph built for batch 1 (mistral/hlo.py:38-41).
            raise RuntimeError(f"The size of tensor a ({self.batch_size}) must match the size of tensor b "
                               f"({input_ids.shape[0]}) at non-singleton dimension 0")
        return super()._cb_prefill(input_ids, cache_ids, seq_ids)
