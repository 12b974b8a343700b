"""Next-token selection from a batch of logits, with per-request parameters.

This is the torch half of the engine. It lives in the engine package (it
imports only ``engine.request``, so there is no cycle with ``backends``), and
the engine imports it only when an ``Engine`` is built, so importing
``djl_python.engine`` does not import torch.

Order of processing, as in ``transformers`` ``generate``:

1. penalties, for greedy and sampled rows alike: ``repetition_penalty`` (HF:
   divide positive / multiply negative logits of every token seen in the prompt
   or the output), then ``frequency_penalty`` (times the count of each generated
   token) and ``presence_penalty`` (once per generated token), as OpenAI defines them;
2. greedy rows take the argmax here;
3. sampled rows: ``temperature``, ``top_k``, ``top_p``, ``min_p``, ``typical_p`` (each
   masks tokens to ``-inf``), then one draw from the softmax.

Before all of this, ``allowed`` (the grammar's token bits of constrained rows,
``engine/grammar.py``) masks every token a row's grammar refuses to ``-inf``, and
``suppress`` (ids a row must not produce yet: its stop ids while it has fewer than
``min_tokens`` tokens) masks those ids. Rows without a constraint are not touched, and
a batch whose rows are all greedy and plain still takes the one-argmax fast path.

A draw is ``argmax(probs / E)`` with ``E ~ Exp(1)`` noise (nano-vllm, gpt-fast):
exact sampling, batched, and no ``multinomial`` sync. A request with a ``seed``
draws its noise from its own ``torch.Generator``, one vocab-wide draw per step,
so its tokens do not depend on what else is in the batch.

Log-probs are ``log_softmax`` of the distribution the token was chosen from:
the penalised logits for greedy rows (temperature is not applied), the fully
processed ones for sampled rows (tokens masked by top-k/top-p/typical-p are
left out of ``top_logprobs``). They are always finite: ``-inf`` and NaN are
reported as ``LOGPROB_FLOOR`` (-9999.0), so JSON output stays valid.

Sampling cannot produce NaN from valid parameters: ``SamplingParams`` refuses
non-finite values and a ``repetition_penalty`` outside [0.01, 100], and a
temperature below 1e-5 is greedy (``SamplingParams.greedy``).

Penalty bookkeeping is per slot and in place: a ``[max_slots, vocab]`` "seen"
mask and count matrix, allocated the first time a request uses a penalty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection, Optional, Sequence

import numpy as np
import torch

from djl_python.engine.request import SamplingParams


LOGPROB_FLOOR = -9999.0  # the log-prob reported for an impossible token (vLLM's clamp)


@dataclass(frozen=True)
class AllowedTokens:
    """The grammar masks of some rows: ``bits[j]`` (int32 words, bit ``t % 32`` of word ``t // 32``
    set when token ``t`` is allowed) applies to row ``rows[j]`` of the logits."""

    rows: list[int]
    bits: "np.ndarray"


@dataclass
class SampleOutput:
    """One step's choices, row ``i`` for the ``i``-th slot passed to ``sample``."""

    token_ids: list[int]
    logprobs: Optional[list[float]] = None  # set when any row asked for log-probs
    top_logprobs: Optional[list[dict[int, float]]] = None  # set when any row asked for top_logprobs


def uses_penalties(params: SamplingParams) -> bool:
    return (
        (params.repetition_penalty is not None and params.repetition_penalty != 1.0)
        or params.presence_penalty != 0.0
        or params.frequency_penalty != 0.0
    )


class Sampler:
    """Per-slot sampling state plus the vectorised selection itself.

    Contract: ``start(slot, prompt_ids, params)`` before a slot's first ``sample``;
    ``release(slot)`` when the request ends. ``sample`` records the chosen tokens
    for later penalties. Tensors live on the device of the logits.
    """

    def __init__(self, max_slots: int, vocab_size: int) -> None:
        self.max_slots = max_slots
        self.vocab_size = vocab_size
        self._seeds: dict[int, int] = {}
        self._generators: dict[int, torch.Generator] = {}
        self._new_prompts: dict[int, list[int]] = {}  # penalised slots whose state is not yet reset
        self._seen: Optional[torch.Tensor] = None  # [max_slots, vocab] bool: prompt or output tokens
        self._counts: Optional[torch.Tensor] = None  # [max_slots, vocab] float32: output token counts

    def start(self, slot: int, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        self.release(slot)
        if params.seed is not None and not params.greedy:
            self._seeds[slot] = params.seed
        if uses_penalties(params):
            self._new_prompts[slot] = list(prompt_ids)

    def release(self, slot: int) -> None:
        self._seeds.pop(slot, None)
        self._generators.pop(slot, None)
        self._new_prompts.pop(slot, None)

    @torch.inference_mode()
    def sample(self, logits: torch.Tensor, slots: Sequence[int], params: Sequence[SamplingParams],
               suppress: Optional[Sequence[Collection[int]]] = None,
               allowed: Optional[AllowedTokens] = None) -> SampleOutput:
        """Choose one token per row of ``logits`` (``[n, vocab]``; not modified, so a failed call can be retried).

        ``suppress[i]``, when given, holds ids row ``i`` must not choose (``min_tokens``);
        ``allowed``, when given, the grammar masks of the constrained rows.
        """
        want_lp = any(p.logprobs or p.top_logprobs for p in params)
        pen_rows = [i for i, p in enumerate(params) if uses_penalties(p)]
        sample_rows = [i for i, p in enumerate(params) if not p.greedy]
        banned = [(i, sorted(ids)) for i, ids in enumerate(suppress or ()) if ids]
        if allowed is not None:
            logits = self._apply_grammar(logits, allowed)
        if not (want_lp or pen_rows or sample_rows or banned):  # the common greedy case: one kernel, one sync
            return SampleOutput(greedy_tokens(logits))

        logits = logits.float()
        if banned:
            if allowed is None:
                logits = logits.clone()  # .float() of float32 logits is the caller's tensor itself
            for i, ids in banned:
                logits[i, torch.tensor(ids, device=logits.device)] = -math.inf
        if pen_rows:
            pen_slots, pen_params = [slots[i] for i in pen_rows], [params[i] for i in pen_rows]
            logits = self._apply_penalties(logits, pen_slots, pen_params, pen_rows)
        tokens = logits.argmax(-1)
        processed = logits
        if sample_rows:
            rows = torch.tensor(sample_rows, device=logits.device)
            warped = warp_logits(logits[rows], [params[i] for i in sample_rows])
            noise = torch.empty_like(warped).exponential_()
            for j, i in enumerate(sample_rows):
                generator = self._generator(slots[i], logits.device)
                if generator is not None:
                    noise[j] = torch.empty_like(noise[j]).exponential_(generator=generator)
            # Exp(1) can be 0: keep 0 / 0 from turning a masked token into NaN, the argmax.
            sampled = (warped.softmax(-1) / noise.clamp_min_(1e-30)).argmax(-1)
            tokens = tokens.index_copy(0, rows, sampled)
            if want_lp:
                processed = logits.index_copy(0, rows, warped)
        if pen_rows:
            self._record([slots[i] for i in pen_rows], tokens[torch.tensor(pen_rows, device=tokens.device)])
        out = SampleOutput(tokens.tolist())
        if want_lp:
            self._logprobs(processed, tokens, params, out)
        return out

    @staticmethod
    def _apply_grammar(logits: torch.Tensor, allowed: AllowedTokens) -> torch.Tensor:
        """A new float32 ``logits`` with every token a constrained row's grammar refuses at ``-inf``."""
        n, vocab = logits.shape
        # numpy unpacks the bits in one C pass (bit t % 32 of word t // 32 is byte-wise little-endian).
        ok = np.unpackbits(np.ascontiguousarray(allowed.bits).view(np.uint8), axis=1, bitorder="little")
        if ok.shape[1] < vocab:  # ids past the grammar's vocabulary: never allowed
            ok = np.pad(ok, ((0, 0), (0, vocab - ok.shape[1])))
        mask = torch.from_numpy(ok[:, :vocab]).to(logits.device).bool()
        logits = logits.float()
        if allowed.rows == list(range(n)):
            return torch.where(mask, logits, -math.inf)
        rows = torch.tensor(allowed.rows, device=logits.device)
        return logits.index_copy(0, rows, torch.where(mask, logits.index_select(0, rows), -math.inf))

    def _generator(self, slot: int, device: torch.device) -> Optional[torch.Generator]:
        if slot not in self._seeds:
            return None
        if slot not in self._generators:  # created lazily: the logits' device is known only now
            generator = torch.Generator(device=device)
            generator.manual_seed(self._seeds[slot])
            self._generators[slot] = generator
        return self._generators[slot]

    def _penalty_state(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._seen is None or self._counts is None or self._seen.device != device:
            self._seen = torch.zeros(self.max_slots, self.vocab_size, dtype=torch.bool, device=device)
            self._counts = torch.zeros(self.max_slots, self.vocab_size, dtype=torch.float32, device=device)
        return self._seen, self._counts

    def _apply_penalties(
        self, logits: torch.Tensor, slots: list[int], params: list[SamplingParams], rows: list[int]
    ) -> torch.Tensor:
        seen, counts = self._penalty_state(logits.device)
        for slot in slots:
            prompt = self._new_prompts.pop(slot, None)
            if prompt is not None:
                seen[slot].zero_()
                counts[slot].zero_()
                seen[slot, torch.tensor(prompt, device=logits.device)] = True
        dev = logits.device
        row_idx = torch.tensor(rows, device=dev)
        slot_idx = torch.tensor(slots, device=dev)
        rep = torch.tensor([p.repetition_penalty or 1.0 for p in params], device=dev).unsqueeze(1)
        freq = torch.tensor([p.frequency_penalty for p in params], device=dev).unsqueeze(1)
        pres = torch.tensor([p.presence_penalty for p in params], device=dev).unsqueeze(1)
        sub = logits[row_idx]
        sub = torch.where(seen[slot_idx], torch.where(sub > 0, sub / rep, sub * rep), sub)
        slot_counts = counts[slot_idx]
        sub -= freq * slot_counts + pres * (slot_counts > 0)
        return logits.index_copy(0, row_idx, sub)

    def _record(self, slots: list[int], tokens: torch.Tensor) -> None:
        seen, counts = self._penalty_state(tokens.device)
        slot_idx = torch.tensor(slots, device=tokens.device)
        seen[slot_idx, tokens] = True
        counts.index_put_((slot_idx, tokens), torch.ones_like(tokens, dtype=counts.dtype), accumulate=True)

    @staticmethod
    def _logprobs(
        processed: torch.Tensor, tokens: torch.Tensor, params: Sequence[SamplingParams], out: SampleOutput
    ) -> None:
        # Finite always (JSON has no -inf/NaN): a masked token is -inf, and logits that are not
        # finite (a model overflow) would be NaN; both report -9999.0 as vLLM's OpenAI server does.
        logprobs = processed.log_softmax(-1).nan_to_num_(nan=LOGPROB_FLOOR, neginf=LOGPROB_FLOOR, posinf=0.0)
        out.logprobs = logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1).tolist()
        k = max(p.top_logprobs for p in params)
        if not k:
            return
        values, indices = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
        out.top_logprobs = [
            {tok: lp for tok, lp in zip(row_ids[: p.top_logprobs], row_lps[: p.top_logprobs]) if lp > LOGPROB_FLOOR}
            for p, row_ids, row_lps in zip(params, indices.tolist(), values.tolist())
        ]


def greedy_tokens(logits: torch.Tensor) -> list[int]:
    """Row-wise argmax of ``[n, vocab]`` logits, as a list.

    On CPU, numpy's SIMD argmax (a zero-copy view) is faster than torch's for float32
    (docs/performance.md) and takes the same index: the first maximum,
    NaN counting as the maximum. torch's also runs as an OpenMP region, which stalls for a
    whole scheduler tick when another process holds one of the cores.
    """
    if logits.device.type == "cpu" and logits.dtype == torch.float32:
        return logits.numpy().argmax(-1).tolist()
    return logits.argmax(-1).tolist()


def warp_logits(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """Temperature, then top-k, top-p, min-p and typical-p masks (``-inf``), per row."""
    dev, vocab = logits.device, logits.shape[-1]
    temperature = torch.tensor([p.temperature or 1.0 for p in params], device=dev).unsqueeze(1)
    logits = logits / temperature
    top_k = [p.top_k if p.top_k and p.top_k < vocab else vocab for p in params]
    # top_p == 1 keeps everything; 2.0 avoids cutting the tail on cumsum rounding.
    top_p = [p.top_p if p.top_p is not None and p.top_p < 1.0 else 2.0 for p in params]
    if min(top_k) < vocab or min(top_p) < 1.0:
        logits = _top_k_top_p(logits, top_k, top_p)
    if any(p.min_p for p in params):
        # p < min_p * p_max  <=>  logit - max_logit < log(min_p): no softmax, no underflow;
        # min_p = 0 gives log 0 = -inf and masks nothing.
        log_min_p = torch.tensor([p.min_p or 0.0 for p in params], device=dev).log().unsqueeze(1)
        logits = logits.masked_fill(logits - logits.max(-1, keepdim=True).values < log_min_p, -math.inf)
    if any(p.typical_p is not None and p.typical_p < 1.0 for p in params):
        logits = typical_mask(logits, [p.typical_p if p.typical_p is not None else 1.0 for p in params])
    return logits


TOP_CANDIDATES = 1024  # top-k / top-p first look among this many of a row's most likely tokens


def _top_k_top_p(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
    """The top-k then top-p masks (top-p on the top-k-renormalised distribution, as transformers'
    warpers chain them).

    Exact, and cheap where it can be: a model's distribution puts nearly all its mass on a few
    hundred tokens, so when every row's cut falls within its ``TOP_CANDIDATES`` most likely tokens
    (its top-k is that small, or those tokens already hold its top-p mass), only they are sorted
    (``topk``). Otherwise the whole vocabulary is sorted (docs/performance.md has the costs).
    """
    dev, vocab = logits.device, logits.shape[-1]
    k = min(vocab, max([TOP_CANDIDATES] + [k for k in top_k if k < vocab]))
    k_t = torch.tensor(top_k, device=dev).unsqueeze(1)
    p_t = torch.tensor(top_p, device=dev).unsqueeze(1)
    if k < vocab:
        values, index = logits.topk(k, dim=-1)  # sorted, descending
        ranks = torch.arange(k, device=dev).unsqueeze(0)
        remove = ranks >= k_t
        # Each row's distribution over what top-k keeps: its k candidates when top-k is set, else
        # the whole row (whose normaliser the candidates alone do not hold).
        norm = torch.where(k_t < vocab, values.masked_fill(remove, -math.inf).logsumexp(-1, keepdim=True),
                           logits.logsumexp(-1, keepdim=True))
        probs = (values.masked_fill(remove, -math.inf) - norm).exp()
        mass_before = probs.cumsum(-1) - probs
        uncut = (k_t >= vocab) & (p_t >= 1.0)  # a row that asks for neither keeps every token
        # The candidates hold the row's top-p mass, with a margin for the cumsum's rounding.
        inside = uncut | (k_t < vocab) | (probs.sum(-1, keepdim=True) >= p_t + 1e-4)
        if bool(inside.all()):
            remove |= mass_before >= p_t
            cut = torch.full_like(logits, -math.inf).scatter(-1, index, values.masked_fill(remove, -math.inf))
            return torch.where(uncut, logits, cut)
    sorted_logits, sorted_idx = logits.sort(-1, descending=True)
    ranks = torch.arange(vocab, device=dev).unsqueeze(0)
    remove = ranks >= k_t
    if min(top_p) < 1.0:
        probs = sorted_logits.masked_fill(remove, -math.inf).softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # the top token always has 0 before it: never removed
        remove |= mass_before >= p_t
    return logits.scatter(-1, sorted_idx, sorted_logits.masked_fill(remove, -math.inf))


def typical_mask(logits: torch.Tensor, mass: list[float]) -> torch.Tensor:
    """Locally typical sampling (Meister et al.), as ``transformers``' TypicalLogitsWarper."""
    dev = logits.device
    log_p = logits.log_softmax(-1)
    entropy = -(log_p * log_p.exp()).nansum(-1, keepdim=True)
    shifted = (-log_p - entropy).abs()
    sorted_shifted, sorted_idx = shifted.sort(-1)
    cumulative = logits.gather(-1, sorted_idx).softmax(-1).cumsum(-1)
    masses = torch.tensor(mass, device=dev).unsqueeze(1)
    last = (cumulative < masses).sum(-1, keepdim=True).clamp_(max=logits.shape[-1] - 1)
    remove_sorted = sorted_shifted > sorted_shifted.gather(-1, last)
    remove_sorted[:, 0] = False  # keep at least one token
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted) & (masses < 1.0)
    return logits.masked_fill(remove, -math.inf)
