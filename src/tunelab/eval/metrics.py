"""Evaluation metrics on top of the losses (tunelab.losses)."""

from __future__ import annotations

import math

def perplexity(nll: float) -> float:
    return math.exp(nll) if nll == nll and nll < 50 else float("inf")
