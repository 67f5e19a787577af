"""SetFit-style classification (`classify.setfit`): contrastive tuning of the encoder on labelled pairs, then a
logistic-regression head on its frozen vectors (Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts").

Pairs (`make_pairs`, SetFit's pair generation). For each of P rounds (P = `classify.setfit.pairs_per_example`),
each anchor i (in a seeded shuffled order) gets one positive pair (i, j, 1), j drawn from i's class other than i,
and one negative pair (i, k, 0), k drawn from the other classes: 2 * n * P pairs for n anchors (an anchor
alone in its class has no positive: P fewer). E.g. 600 examples, P = 8 -> 9,600 pairs, 600 steps of 16.

Loss (`cosine_pair_loss`, sentence-transformers' CosineSimilarityLoss, SetFit's default): for a batch of B
pairs with sentence vectors u_i, v_i (mean-pooled, `tunelab.ops.mean_pool`) and targets y_i in {0, 1},

    L = (1/B) sum_i (cos(u_i, v_i) - y_i)^2

so same-label sentences are pulled to cosine 1 and different-label ones pushed to cosine 0 (orthogonal).
Stage one trains every encoder weight with it (`train_contrastive`: train.optim, lr, weight_decay,
scheduler with warmup_ratio, max_grad_norm; dropout on; bf16 autocast where train.precision says so).

Head (`fit_logistic_head`): multinomial logistic regression on the tuned encoder's unit vectors e_i, with
per-class weights s_c (`classify.class_weights`: auto = n / (K count_c), none = 1):

    minimise  sum_i s_{y_i} CE(W e_i + b, y_i) + ||W||^2 / (2 C)        (b not penalised; C = head_c)

which is sklearn's `LogisticRegression(C=C, class_weight=...)` objective (the same optimum); solved with
full-batch L-BFGS in float64 (the objective is convex, so the solution does not depend on the start).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from tunelab.infer.classify import length_batched, pad_batch
from tunelab.ops.mean_pool import mean_pool


def make_pairs(label_ids: list[int], pairs_per_example: int, seed: int,
               anchors: list[int] | None = None) -> list[tuple[int, int, float]]:
    """(i, j, target) pairs of example indices: target 1.0 same label, 0.0 different; see the module docstring.
    `anchors` (default: every example once) may repeat examples (the balanced sampler's anchor list)."""
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(label_ids):
        by_class.setdefault(y, []).append(i)
    others = {y: [i for i, z in enumerate(label_ids) if z != y] for y in by_class}
    order = list(range(len(label_ids))) if anchors is None else list(anchors)
    pairs: list[tuple[int, int, float]] = []
    for _ in range(pairs_per_example):
        rng.shuffle(order)
        for i in order:
            y = label_ids[i]
            mates = by_class[y]
            if len(mates) > 1:
                j = mates[rng.randrange(len(mates) - 1)]
                j = j if j != i else mates[-1]  # uniform over the class without i
                pairs.append((i, j, 1.0))
            if others[y]:
                pairs.append((i, others[y][rng.randrange(len(others[y]))], 0.0))
    return pairs


def cosine_pair_loss(u: torch.Tensor, v: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(1/B) sum_i (cos(u_i, v_i) - y_i)^2 over a batch of B pairs (CosineSimilarityLoss)."""
    return ((F.cosine_similarity(u.float(), v.float(), dim=-1) - target.float()) ** 2).mean()


@dataclass
class ContrastiveStats:
    steps: int = 0
    tokens: int = 0  # non-pad tokens encoded in the training steps
    seconds: float = 0.0
    epoch_loss: list[float] = field(default_factory=list)  # mean training loss per epoch


def train_contrastive(encoder, ids: list[list[int]], pairs: list[tuple[int, int, float]], train, *,
                      pad_id: int, amp: torch.dtype | None = None, log=None) -> ContrastiveStats:
    """Tune `encoder` in place on `pairs` over the token ids `ids` with `cosine_pair_loss` (`train`: the
    config's train section). Each step encodes every distinct text of its batch of pairs once."""
    from transformers import get_scheduler

    from tunelab.train.optim import make_optimizer

    t0 = time.perf_counter()
    torch.manual_seed(train.seed)
    rng = random.Random(train.seed)
    device = next(encoder.parameters()).device
    per_epoch = math.ceil(len(pairs) / train.batch_size)
    total = train.max_steps if train.max_steps > 0 else max(1, math.ceil(train.epochs * per_epoch))
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = make_optimizer(params, train.optim, train.lr, train.weight_decay, device)
    kind = train.scheduler if train.scheduler != "constant" else "constant_with_warmup"
    sched = get_scheduler(kind, opt, num_warmup_steps=math.ceil(train.warmup_ratio * total),
                          num_training_steps=total)
    stats = ContrastiveStats()
    encoder.train()
    try:
        while stats.steps < total:
            order = list(range(len(pairs)))
            rng.shuffle(order)
            losses = []
            for s in range(0, len(order), train.batch_size):
                if stats.steps >= total:
                    break
                batch = [pairs[k] for k in order[s:s + train.batch_size]]
                texts = sorted({i for p in batch for i in p[:2]})
                row = {i: r for r, i in enumerate(texts)}
                enc = {k: v.to(device) for k, v in pad_batch([ids[i] for i in texts], pad_id).items()}
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    e = mean_pool(encoder, enc)
                u = e[[row[p[0]] for p in batch]]
                v = e[[row[p[1]] for p in batch]]
                loss = cosine_pair_loss(u, v, torch.tensor([p[2] for p in batch], device=device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm)
                opt.step()
                sched.step()
                stats.steps += 1
                stats.tokens += int(enc["attention_mask"].sum())
                losses.append(float(loss.detach()))
                if log and (stats.steps % train.logging_steps == 0 or stats.steps == total):
                    log({"step": stats.steps, "epoch": round(stats.steps / per_epoch, 4), "loss": round(losses[-1], 5),
                         "lr": sched.get_last_lr()[0]})
            stats.epoch_loss.append(round(sum(losses) / max(1, len(losses)), 5))
    finally:
        encoder.eval()
    stats.seconds = round(time.perf_counter() - t0, 1)
    return stats


def embed_texts(encoder, ids: list[list[int]], pad_id: int, batch_size: int = 64,
                amp: torch.dtype | None = None) -> torch.Tensor:
    """Unit mean-pooled vectors (n, d), float32, in input order (batches formed by length, eval mode)."""
    return torch.stack(length_batched(encoder, ids, pad_id, batch_size, amp, mean_pool))


def fit_logistic_head(x: torch.Tensor, y: list[int], n_classes: int, weights: torch.Tensor | None = None,
                      c: float = 1.0, max_iter: int = 500) -> torch.nn.Linear:
    """The head W, b minimising sum_i s_{y_i} CE(W x_i + b, y_i) + ||W||^2 / (2c) (see the module docstring);
    `weights` = per-class s (None: all 1). Returned as a float32 `torch.nn.Linear(d, n_classes)`."""
    x64 = x.double()
    t = torch.tensor(y, dtype=torch.long)
    s = (torch.ones(n_classes, dtype=torch.float64) if weights is None else weights.double())[t]
    n = len(y)
    w = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def objective():  # divided by n: the same optimum, gradients of order 1 for the stopping test
        opt.zero_grad()
        ce = F.cross_entropy(x64 @ w.T + b, t, reduction="none")
        loss = ((s * ce).sum() + (w * w).sum() / (2 * c)) / n
        loss.backward()
        return loss

    opt.step(objective)
    head = torch.nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():
        head.weight.copy_(w.detach().float())
        head.bias.copy_(b.detach().float())
    return head
