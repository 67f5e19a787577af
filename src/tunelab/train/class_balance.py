"""Class balance for task classify: per-class loss weights (`classify.class_weights`) and the
balanced sampler (`classify.sampler: balanced`).

Weights. auto is sklearn's `compute_class_weight("balanced")`: with n training examples, K classes
present in them and count_c of class c,

    w_c = n / (K * count_c)      e.g. counts (64, 27, 9), n = 100: w = (0.521, 1.235, 3.704)

(a listed label with no training example gets 0: it is never a target). A mapping {label: w} gives the
weights itself (labels left out weigh 1); none = every weight 1 (plain cross-entropy).
The loss of a micro-batch of m examples is sum_i w_{y_i} * CE(logits_i, y_i) / m: with auto weights the
mean weight over the training set is sum_c count_c * n / (K count_c) / n = 1, so the loss keeps the
scale of plain cross-entropy (torch's reduction="mean" would divide by sum_i w_{y_i} instead).

Balanced sampler. Every class is repeated up to the largest class's count (full copies, then a seeded
sample without replacement for the rest), so an epoch holds K * max_c count_c examples, each class
an equal share; e.g. counts (64, 27, 9) -> 64 + 64 + 64 = 192 (class 3: 7 full copies + 1 sampled).
"""

from __future__ import annotations

import random

import torch

from tunelab.errors import TunelabError


def class_counts(label_ids: list[int], n_classes: int) -> list[int]:
    counts = [0] * n_classes
    for y in label_ids:
        counts[y] += 1
    return counts


def balanced_weights(counts: list[int]) -> list[float]:
    """w_c = n / (K * count_c) over the K classes present (sklearn's "balanced"); 0 for an absent class."""
    n, present = sum(counts), sum(1 for c in counts if c)
    return [n / (present * c) if c else 0.0 for c in counts]


def class_weights(spec, labels: list[str], label_ids: list[int]) -> torch.Tensor | None:
    """The loss weights for `classify.class_weights` (`spec`): None for none (plain cross-entropy)."""
    if spec == "none":
        return None
    if spec == "auto":
        return torch.tensor(balanced_weights(class_counts(label_ids, len(labels))), dtype=torch.float32)
    unknown = [k for k in spec if k not in labels]
    if unknown:
        raise TunelabError(f"classify.class_weights names '{unknown[0]}', which is not a label",
                           where="classify.class_weights", hint=f"labels: {', '.join(labels)}")
    return torch.tensor([float(spec.get(x, 1.0)) for x in labels], dtype=torch.float32)


def oversample(examples: list, label_ids: list[int], seed: int) -> list:
    """Every class repeated up to the largest class's count (deterministic in `seed`), in class order."""
    by_class: dict[int, list] = {}
    for ex, y in zip(examples, label_ids):
        by_class.setdefault(y, []).append(ex)
    top = max(len(v) for v in by_class.values())
    rng = random.Random(seed)
    out = []
    for y in sorted(by_class):
        items = by_class[y]
        full, rest = divmod(top, len(items))
        out += items * full + rng.sample(items, rest)
    return out
