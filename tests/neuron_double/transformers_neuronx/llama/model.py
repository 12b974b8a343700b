"""``transformers_neuronx.llama.model.LlamaForSampling`` (a ``NeuronModelBase``; extra kwargs are ignored)."""

from transformers_neuronx._double import RELEASE, record
from transformers_neuronx.base import NeuronModelBase


class LlamaForSampling(NeuronModelBase):
    # aws-neuron/transformers-neuronx#79: static batching with non-zero start_ids answers NaN before
    # 0.11 (fixed in Neuron 2.19).
    masked_static_nan = RELEASE.label in ("0.9", "0.10-early", "0.10-late")

    def speculative_forward(self, input_ids, cache_ids=None, start_ids=None, speculation_length=None):
        """c8d6bdc llama/model.py:180-217 and 1ade6d7 llama/model.py:308-349: without continuous batching,
        ``start_ids`` default to zeros and ``cache_ids`` to ``arange(width)``; the graph is
        ``decoder_lm_head_for_speculation[k, batch]``, found by bucket when ``k`` is an int (always: the keys
        are tuples); it writes every input token at its cache id, shares the KV cache with the token graph,
        and returns ``[k, vocab, batch]`` logits, one per input position. Not emulated before c8d6bdc, whose
        ``_preprocess`` call (0623de2 llama/model.py:188-212) LMI 0.28 had to replace with its own copy
        (djl-serving v0.28.0 optimum_modeling.py:99-150)."""
        import torch

        from transformers_neuronx._runtime import find

        if RELEASE.label in ("0.8", "0.9", "0.10-early", "0.10-late"):
            raise NotImplementedError(f"speculative_forward is not emulated for transformers-neuronx {RELEASE.label}")
        device = self._check_ready(input_ids)
        assert not self.continuous, "continuous-batching speculation (vLLM's path) is not emulated"
        batch, width = input_ids.shape
        starts = [0] * batch if start_ids is None else [int(s) for s in start_ids.flatten()]
        cols = list(range(width)) if cache_ids is None else [int(c) for c in cache_ids.flatten()]
        assert len(cols) == width, f"cache_ids {cols} for {width} input tokens"
        if speculation_length is not None and speculation_length not in self.decoder_lm_head_for_speculation:
            lengths = [k for (k, _) in self.decoder_lm_head_for_speculation]
            speculation_length = find(lengths, width)
            if speculation_length is None or (speculation_length, batch) not in self.decoder_lm_head_for_speculation:
                raise KeyError((speculation_length, batch))
        assert speculation_length is None or width == speculation_length, \
            f"the speculation graph takes {speculation_length} tokens, got {width}"
        for col in cols:
            self._check_position(col)
        record("speculative_forward", width, tuple(cols))
        for b in range(batch):
            for j, col in enumerate(cols):
                device.write(b, col, int(input_ids[b, j]))
        logits = torch.stack([torch.stack([device.logits(b, starts[b], col) for col in cols]) for b in range(batch)])
        return logits.permute(1, 2, 0)  # [k, vocab, batch]

