"""Validation metrics computed the same way for every model and method.

reply_nll = sum over reply tokens of -log p(token | prefix) / number of reply tokens
(token-weighted mean over the whole set, not a mean of per-batch means); perplexity = exp(reply_nll).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunelab.data.tokenize import IGNORE, TokenizedExample, collate
from tunelab.models.structure import decoder_and_head
from tunelab.ops.linear_ce import linear_cross_entropy_sum
from tunelab.ops.shared_prefix import (
    can_share,
    decode_after_prefix,
    shared_prefix_length,
)
from tunelab.ops.unpad import mlp_on_real_rows


def token_nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum of next-token NLL over positions whose label is not IGNORE, and their count."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    n = int((shift_labels != IGNORE).sum())
    loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")
    return loss, n


def reply_loss_sum(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   labels: torch.Tensor, share_opening: bool = True,
                   skip_padding: bool = True) -> tuple[torch.Tensor, int]:
    """Sum of next-token NLL over learned positions, and their count.

    The output head runs only on positions that have a target: a fraction (1 - learned share) of
    the head's 2 V d FLOP per token, forward and backward (e.g. SmolLM2's 49,152 x 576 head with
    40% of tokens learned: ~60% of 57 GFLOP per 1,000 tokens). A bias-free Linear head goes through
    `ops.linear_ce.linear_cross_entropy_sum` (head and loss chunk by chunk, gradient formed in
    the forward), so no P x V logits outlive their chunk. An opening shared by every row of the
    batch (a chat template's system turn) runs once (`ops.shared_prefix`), and the blocks' MLPs
    skip the padding (`ops.unpad`). `share_opening` / `skip_padding` False turn those two off
    (same loss and gradients, more work: benchmarks/train_savings.py measures them).
    """
    parts = decoder_and_head(model)
    if parts is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return token_nll_sum(logits, labels)
    decoder, head = parts
    # the batch's common opening runs once (ops/shared_prefix.py): hidden states from position p on
    p = shared_prefix_length(input_ids, attention_mask, labels) if share_opening else 0
    if p and not can_share(decoder):  # asked only when there is an opening to share
        p = 0
    rows = None if attention_mask is None or not skip_padding else attention_mask[:, p:]
    with mlp_on_real_rows(decoder, rows):  # padding skips the MLPs (ops/unpad.py)
        if p:
            hidden = decode_after_prefix(decoder, input_ids, attention_mask, p)
        else:
            hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    target = labels[:, p + 1:]
    keep = target != IGNORE
    n = int(keep.sum())
    h, t = hidden[:, :-1][keep], target[keep]
    if isinstance(head, torch.nn.Linear) and head.bias is None:
        return linear_cross_entropy_sum(h, head.weight, t), n
    return F.cross_entropy(head(h).float(), t, reduction="sum"), n


@torch.no_grad()
def reply_nll(model, examples: list[TokenizedExample], pad_id: int, batch_size: int = 8,
              autocast_dtype: torch.dtype | None = None) -> float:
    """Mean NLL per reply token over `examples` (nan when there are none)."""
    if not examples:
        return float("nan")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    for s in range(0, len(order), batch_size):
        batch = collate([examples[i] for i in order[s:s + batch_size]], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss, n = reply_loss_sum(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        total += float(loss)
        count += n
    model.train(was_training)
    return total / max(count, 1)


