"""The bf16 margin rule: is a bf16 implementation's greedy token explained by bf16 rounding?

bf16 keeps 8 significant bits (unit roundoff ``u = 2**-8``), so two correct bf16
implementations that round in a different order (another GEMM kernel, fused matmuls, native
bf16 instructions or fp32 emulation) can pick different tokens wherever the two best
candidates are nearly tied. Judging them by agreement with one another, or with a pass
fraction measured on one CPU, either fails on a correct implementation (a CPU whose bf16
path rounds differently) or passes a wrong one.

The rule judges each token against an fp32 reference instead, on the implementation's own
path (teacher forcing: the reference reads the prompt and the tokens generated before, so
one early difference does not condemn every later token):

* where the token is the fp32 reference's argmax, it agrees;
* otherwise it is excused only where the reference's top two are within bf16 rounding of
  each other and the token is the second of them: with ``a`` the reference's top token and
  ``b`` the chosen one, ``b`` ranks second and ``z_a - z_b <= delta_a + delta_b``, where
  ``delta_j = 2 u sum_i |h_i W_ji| + u |z_j|``, ``h`` the fp32 final hidden state and
  ``W_j`` the LM head row. ``delta_j`` is the first-order bound on a dot product whose two
  inputs were each rounded to bf16 once (relative error ``u`` per factor) and whose
  fp32-accumulated result was rounded to bf16 once; fp32 accumulation error (``n 2**-24``)
  is far below it.

The bound comes from bf16's precision and the reference's own numbers, not from a
measurement of any implementation. A systematic error (a wrong attention scale, a column
off by one) picks tokens ranked third or lower, or gaps past the bound, and is refused
(``test_native_bf16`` plants one to show it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM

BF16_UNIT_ROUNDOFF = 2.0 ** -8


@dataclass(frozen=True)
class Miss:
    """A token that is not the fp32 argmax: ``rank`` is its rank in the reference (2: second),
    ``gap`` the reference's ``z_top - z_chosen``, ``bound`` the bf16 rounding bound on it."""

    step: int
    chosen: int
    top: int
    rank: int
    gap: float
    bound: float

    @property
    def excused(self) -> bool:
        return self.rank == 2 and self.gap <= self.bound


class Fp32Reference:
    """The model in fp32 (the Hugging Face forward), read by teacher forcing."""

    def __init__(self, model_dir: str | Path) -> None:
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    @torch.inference_mode()
    def misses(self, prompt: Sequence[int], tokens: Sequence[int]) -> list[Miss]:
        """Every step where ``tokens`` (generated after ``prompt``) leaves the fp32 argmax."""
        ids = torch.tensor([list(prompt) + list(tokens[:-1])])
        hidden = self.model.model(input_ids=ids).last_hidden_state[0, len(prompt) - 1:]  # [T, hidden], normed
        head = self.model.lm_head.weight
        logits = hidden @ head.T
        out = []
        for step, chosen in enumerate(tokens):
            z = logits[step]
            top = int(z.argmax())
            if chosen == top:
                continue

            def delta(j: int) -> float:
                dot_abs = float(hidden[step].abs() @ head[j].abs())
                return 2 * BF16_UNIT_ROUNDOFF * dot_abs + BF16_UNIT_ROUNDOFF * abs(float(z[j]))

            rank = 1 + int((z > z[chosen]).sum())
            out.append(Miss(step, chosen, top, rank, float(z[top] - z[chosen]), delta(top) + delta(chosen)))
        return out


def unexcused(reference: Fp32Reference, prompts: Sequence[Sequence[int]],
              continuations: Sequence[Sequence[int]]) -> list[tuple[int, Miss]]:
    """(prompt index, miss) for every token the rule does not excuse."""
    return [(i, miss) for i, (prompt, tokens) in enumerate(zip(prompts, continuations))
            for miss in reference.misses(prompt, tokens) if not miss.excused]
