"""Choosing the next token from logits.

    temperature == 0:  argmax(logits)                                     greedy
    temperature  > 0:  p = softmax(logits / T), restricted to the smallest set of tokens whose
                       probability sums to >= top_p (the most likely always kept), renormalized,
                       then one draw from a generator seeded with `seed` (same seed, same tokens)

The top-p rule is transformers' TopPLogitsWarper: sort ascending, drop the tokens whose cumulative
probability is <= 1 - top_p.
"""

from __future__ import annotations

import torch


class Sampler:
    def __init__(self, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None):
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        self.temperature, self.top_p = temperature, top_p
        self.generator = None
        if temperature > 0:
            self.generator = torch.Generator()
            self.generator.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        """The next token of every row of `logits` [B, V] -> [B] (long)."""
        if self.temperature == 0:
            return logits.argmax(-1)
        scores = logits.float() / self.temperature
        if self.top_p < 1:
            sorted_scores, order = torch.sort(scores, descending=False, dim=-1)
            cum = sorted_scores.softmax(-1).cumsum(-1)
            drop = cum <= 1 - self.top_p
            drop[..., -1] = False  # keep at least the most likely token
            scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        probs = scores.softmax(-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
