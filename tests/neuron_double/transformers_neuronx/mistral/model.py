"""``transformers_neuronx.mistral.model.MistralForSampling`` (from 0.9, 8b01968).

The sliding window before 1ade6d7: every ``forward`` adds ``last_token_id + 1`` (the context's
width, or 1 for a token step) to ``num_processed_tokens``, and a token step whose KV cache (its
token bucket) is longer than ``sliding_window`` attends only the slice that starts at
``num_processed_tokens - sliding_window`` (8b01968 ``mistral/model.py:133-149``,
``mistral/hlo.py:170-181``). The counter is model-wide (per row on 0623de2,
``mistral/model.py:68-72``) and is reset only by ``reset()`` from c8d6bdc (``:129-133``). So across
requests, or once a sequence outgrows the window, the slice misses the tokens a row should
attend: the double then answers with the logits of the attended tokens only, which differ from
the model's. 1ade6d7 computes each row's window from its ``cache_ids`` (``mistral/hlo.py:200-201``)
and is not emulated as drifting.
"""

import torch

from transformers_neuronx._double import RELEASE
from transformers_neuronx._runtime import find
from transformers_neuronx.base import NeuronModelBase

if "mistral" not in RELEASE.models:
    raise ImportError("transformers_neuronx.mistral does not exist in this release")


class MistralForSampling(NeuronModelBase):
    drifting_window = RELEASE.label in ("0.9", "0.10-early", "0.10-late", "0.11")

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self.num_processed_tokens = 0
        self._window_start = 0

    def reset(self):
        super().reset()
        if RELEASE.label in ("0.11", "0.13"):  # c8d6bdc mistral/model.py:129-133
            self.num_processed_tokens = 0

    def forward(self, input_ids, cache_ids=None, start_ids=None):
        window = getattr(self.config, "sliding_window", None)
        self._window_start = max(0, self.num_processed_tokens - window) if window else 0
        logits = super().forward(input_ids, cache_ids, start_ids)
        width = input_ids.shape[1]
        bucket = find(self.context_buckets, width) if width > 1 else None
        self.num_processed_tokens += min(width, bucket) if bucket else width  # last_token_id + 1
        return logits

    def _token_window(self, row, position):
        window = getattr(self.config, "sliding_window", None)
        bucket = find(self.token_buckets, position + 1)
        if not self.drifting_window or not window or bucket is None or bucket <= window:
            return None
        return (self._window_start, window)

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
