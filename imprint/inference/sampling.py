"""Choosing each row's next token: one rule for answers, eval samples, replay, synthesis and the server.

Per row, in this order: tokens that may not open the answer are removed (first step only), penalties apply,
then greedy, or temperature, top-k and nucleus (top-p) sampling with the row's own seeded generator. A row's
draw never depends on the other rows of its batch, so a seeded row samples the same tokens alone or batched.
The log-probability kept for each chosen token is the model's, over the tokens the row may choose (the first
step's suppressed tokens excluded), before penalties and temperature: what an answer's confidence is made of.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    """Per-row decoding settings (OpenAI semantics: temperature 0 is greedy, penalties in [-2, 2]; `top_k` 0 is off)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_k: int = 0

    @property
    def greedy(self) -> bool:
        # below 1e-5 a temperature is greedy in effect, and dividing logits by it would overflow to inf
        return self.temperature < 1e-5 or self.top_p == 0


GREEDY = Sampling(max_tokens=1, temperature=0.0)


def _distribution(logits: torch.Tensor, s: Sampling) -> torch.Tensor:
    """Probabilities to draw from: temperature, then top-k, then the nucleus (always keeps the likeliest token).
    With top-k, only the k candidates are sorted (a 262k vocabulary is not)."""
    logits = logits / s.temperature
    if 0 < s.top_k < logits.shape[-1]:
        values, order = logits.topk(s.top_k)  # sorted, descending
        probs = _nucleus(values.softmax(-1), s.top_p)
        return torch.zeros_like(logits).scatter_(0, order, probs)
    probs = logits.softmax(-1)
    if s.top_p >= 1:
        return probs
    sorted_probs, order = probs.sort(descending=True)
    return torch.zeros_like(probs).scatter_(0, order, _nucleus(sorted_probs, s.top_p))


def _nucleus(sorted_probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Descending probabilities with those past the top-p mass zeroed."""
    if top_p >= 1:
        return sorted_probs
    return sorted_probs * (sorted_probs.cumsum(-1) - sorted_probs < top_p)


def sample_next_token(logits: torch.Tensor, rows: list) -> tuple[list[int], list[float]]:
    """Next token per row of `logits` (batch, vocab) and its log-probability (see the module docstring).

    A row needs `sampling`, `ids` (its tokens so far), `suppress_first`, `logprobs` (empty on the first step) and
    a `generator` slot (None until it first samples)."""
    logits = logits.float().clone()
    for i, row in enumerate(rows):
        if row.suppress_first and not row.logprobs:
            logits[i, list(row.suppress_first)] = float("-inf")
    normaliser = logits.logsumexp(-1)
    model_logits = logits
    if any(r.sampling.presence_penalty or r.sampling.frequency_penalty for r in rows):
        model_logits = logits.clone()
    for i, row in enumerate(rows):
        s = row.sampling
        if row.ids and (s.presence_penalty or s.frequency_penalty):
            ids, counts = torch.tensor(row.ids, device=logits.device).unique(return_counts=True)
            logits[i, ids] -= s.presence_penalty + s.frequency_penalty * counts.to(logits.dtype)
    chosen = logits.argmax(-1).tolist()
    for i, row in enumerate(rows):
        s = row.sampling
        if s.greedy:
            continue
        if row.generator is None:
            row.generator = torch.Generator(device=logits.device)
            row.generator.manual_seed(s.seed if s.seed is not None else random.getrandbits(63))
        chosen[i] = int(torch.multinomial(_distribution(logits[i], s), 1, generator=row.generator))
    index = torch.tensor(chosen, device=logits.device)
    logprobs = (model_logits.gather(-1, index[:, None])[:, 0] - normaliser).tolist()
    return chosen, logprobs
