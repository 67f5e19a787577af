"""Bootstrap 95% intervals over examples (seeded, so a report is reproducible).

`interval(values)` resamples the examples with replacement `n` times and takes the 2.5th and 97.5th
percentiles of the resampled mean; `interval(values, weights)` does the same for a weighted mean
(sum w v / sum w: a token-weighted NLL, where v is an example's mean NLL and w its reply tokens);
`interval_of(fn, n_examples)` for any statistic of a list of example indices (macro-F1).
"""

from __future__ import annotations

import math
import random

RESAMPLES = 1000
SEED = 0


def _percentiles(stats: list[float]) -> tuple[float, float]:
    s = sorted(x for x in stats if x == x)
    if not s:
        return float("nan"), float("nan")
    lo = s[max(0, math.floor(0.025 * (len(s) - 1)))]
    hi = s[min(len(s) - 1, math.ceil(0.975 * (len(s) - 1)))]
    return lo, hi


def interval_of(fn, n_examples: int, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """(low, high) of `fn(indices)` over `resamples` bootstrap samples of range(n_examples)."""
    if n_examples == 0:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    return _percentiles([fn([rng.randrange(n_examples) for _ in range(n_examples)]) for _ in range(resamples)])


def mean(values: list[float], weights: list[float] | None = None) -> float:
    if weights is None:
        return sum(values) / len(values) if values else float("nan")
    w = sum(weights)
    return sum(v * x for v, x in zip(values, weights)) / w if w else float("nan")


def interval(values: list[float], weights: list[float] | None = None, resamples: int = RESAMPLES,
             seed: int = SEED) -> tuple[float, float]:
    if weights is None:
        return interval_of(lambda idx: sum(values[i] for i in idx) / len(idx), len(values), resamples, seed)

    def stat(idx):
        w = sum(weights[i] for i in idx)
        return sum(values[i] * weights[i] for i in idx) / w if w else float("nan")

    return interval_of(stat, len(values), resamples, seed)


def summary(values: list[float], weights: list[float] | None = None) -> dict:
    """{"value", "low", "high", "n"}: the (weighted) mean and its bootstrap 95% interval."""
    lo, hi = interval(values, weights)
    return {"value": mean(values, weights), "low": lo, "high": hi, "n": len(values)}
