"""Fine-tune a sentence encoder on (question, passage) pairs with in-batch negatives.

MultipleNegativesRankingLoss (sentence-transformers' name; also "InfoNCE with in-batch negatives"):
for a batch of B pairs with unit vectors q_i (questions) and p_j (passages),

    s_ij = scale * cos(q_i, p_j)                      scale = 20 (sentence-transformers' default)
    L    = mean_i [ -log( exp(s_ii) / sum_j exp(s_ij) ) ]  = cross_entropy(S, [0, 1, ..., B-1])

so every other passage of the batch is a negative for q_i. A batch never holds the same passage
twice (`distinct_batches`), or a question's own passage would also count as its negative.

Training (`train_pairs`): the full encoder (every weight; MiniLM-L6 has 22.7M), AdamW with
weight decay 0.01, the learning rate warmed up linearly over the first 10% of the steps and then
decayed linearly to 0 (sentence-transformers' WarmupLinear), gradient norm clipped at 1.0,
dropout on (train mode), fp32. Vectors are `tunelab.ops.mean_pool.mean_pool` (the same pooling as
at query time). Seeded: the same pairs and seed give the same weights.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

MNRL_SCALE = 20.0


def mnrl_loss(q, p, scale: float = MNRL_SCALE):
    """MultipleNegativesRankingLoss of question vectors `q` (B, d) against their passages `p` (B, d); see module."""
    import torch
    import torch.nn.functional as F

    scores = scale * F.normalize(q, dim=-1) @ F.normalize(p, dim=-1).T  # (B, B): s_ij
    return F.cross_entropy(scores, torch.arange(len(q), device=q.device))


def distinct_batches(pairs: list[tuple[str, str, str]], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of indices into `pairs` (question, passage, chunk id) in which no chunk id repeats.

    Greedy: walk the shuffled pairs, put each in the first open batch that lacks its chunk; a batch
    closes when full. Every pair lands in exactly one batch; the last batches may be smaller."""
    order = list(range(len(pairs)))
    rng.shuffle(order)
    open_batches: list[tuple[list[int], set[str]]] = []
    done: list[list[int]] = []
    for i in order:
        cid = pairs[i][2]
        for members, ids in open_batches:
            if cid not in ids:
                members.append(i)
                ids.add(cid)
                break
        else:
            open_batches.append(([i], {cid}))
        full = [b for b in open_batches if len(b[0]) >= batch_size]
        for b in full:
            open_batches.remove(b)
            done.append(b[0])
    return done + [b[0] for b in open_batches]


@dataclass
class TrainStats:
    steps: int = 0
    epoch_loss: list[float] = field(default_factory=list)  # mean training loss per epoch
    seconds: float = 0.0


def warmup_linear(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: step / warmup while warming up, then (total - step) / (total - warmup)."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def train_pairs(model, tokenizer, pairs: list[tuple[str, str, str]], *, epochs: int = 1, batch_size: int = 32,
                lr: float = 2e-5, scale: float = MNRL_SCALE, query_tokens: int = 64, passage_tokens: int = 290,
                seed: int = 0, log=None) -> TrainStats:
    """Fine-tune `model` in place on `pairs` (question, passage text, chunk id) with `mnrl_loss`; see module."""
    import time

    import torch

    from tunelab.ops.mean_pool import mean_pool

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not _no_decay(n)]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and _no_decay(n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}], lr=lr)
    per_epoch = len(distinct_batches(pairs, batch_size, random.Random(seed)))
    total = max(1, epochs * per_epoch)
    warmup = math.ceil(0.1 * total)  # e.g. 3 epochs x 10 steps = 30 steps -> 3 warm-up steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_linear(s, total, warmup))
    stats = TrainStats()
    model.train()
    try:
        for epoch in range(epochs):
            losses = []
            for batch in distinct_batches(pairs, batch_size, rng):
                if len(batch) < 2:  # one pair has no negative: the loss is 0 and teaches nothing
                    continue
                qs = tokenizer([pairs[i][0] for i in batch], padding=True, truncation=True,
                               max_length=query_tokens, return_tensors="pt")
                ps = tokenizer([pairs[i][1] for i in batch], padding=True, truncation=True,
                               max_length=passage_tokens, return_tensors="pt")
                loss = mnrl_loss(mean_pool(model, qs), mean_pool(model, ps), scale)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                stats.steps += 1
                losses.append(float(loss.detach()))
            stats.epoch_loss.append(round(sum(losses) / max(1, len(losses)), 4))
            if log:
                log(f"epoch {epoch + 1}/{epochs}: {len(losses)} steps, mean loss {stats.epoch_loss[-1]:.4f}")
    finally:
        model.eval()
    stats.seconds = round(time.perf_counter() - t0, 1)
    return stats


def _no_decay(name: str) -> bool:
    """Biases and LayerNorm weights get no weight decay (the usual BERT recipe)."""
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name
