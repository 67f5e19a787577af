"""Prior (threshold) correction for a classifier: per-class logit offsets tuned for macro-F1.

    prediction(x) = argmax_k (z_k(x) + b_k)        probabilities: softmax_k(z_k(x) + b_k)

z = the head's logits, b = one offset per class. Adding b_k multiplies class k's odds by exp(b_k),
which is what a changed class prior does (p(k|x) ∝ p(x|k) p(k)): b_k = 1.0 makes class k e^1 = 2.7
times likelier against every other class. b is tuned on the validation split by coordinate ascent
over GRID: start at b = 0; for class k = 1..K-1 (class 0 stays at 0: only differences matter), try
every grid value for b_k with the others fixed and keep the one with the highest validation macro-F1
(a tie keeps the value nearest 0); repeat until a round changes nothing (at most `rounds`). The
result never scores below b = 0 on the split it was tuned on.
"""

from __future__ import annotations

import torch

from tunelab.eval.classification import classification_metrics

GRID = [round(-4.0 + 0.1 * i, 1) for i in range(81)]  # -4.0, -3.9, ..., 4.0
FILE = "offsets.json"  # in the run folder, next to labels.json (infer/classify.py reads it: OFFSETS_FILE)


def macro_f1_with(logits: torch.Tensor, y: list[int], offsets: list[float], labels: list[str]) -> float:
    pred = (logits + torch.tensor(offsets, dtype=logits.dtype)).argmax(-1).tolist()
    return classification_metrics(y, pred, labels)["macro_f1"]


def tune_offsets(logits: torch.Tensor, y: list[int], labels: list[str], grid: list[float] = GRID,
                 rounds: int = 4) -> dict:
    """{"offsets": b per class, "macro_f1_before": at b = 0, "macro_f1_after": at b} on (logits, y)."""
    k = len(labels)
    b = [0.0] * k
    best = before = macro_f1_with(logits, y, b, labels)
    for _ in range(rounds):
        changed = False
        for c in range(1, k):
            for g in sorted(grid, key=abs):  # nearest 0 first: a tie keeps the smaller offset
                if g == b[c]:
                    continue
                f = macro_f1_with(logits, y, b[:c] + [g] + b[c + 1:], labels)
                if f > best + 1e-12:
                    best, b[c], changed = f, g, True
        if not changed:
            break
    return {"offsets": b, "macro_f1_before": before, "macro_f1_after": best}
