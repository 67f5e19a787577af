"""What the training loop optimizes: an Objective turns examples into batches, a loss and metrics.

The loop (`train_loop`) is task-agnostic; each task supplies one Objective:

    collate(examples)        -> dict of tensors (moved to the device by the loop)
    loss_sum(model, batch)   -> (summed loss tensor, count); the step loss is sum / count
    evaluate(model, examples, amp) -> {"val_loss": float, ...extra metrics}; lower val_loss is better
    length(example)          -> tokens of the example (length grouping of batches)
    trained_tokens(batch, n) -> tokens the step trained on, for tokens/s (default: the count n)
    evaluate_sums(model, examples, amp) -> (summed loss, count), optional: lets N processes reduce
                             val_loss exactly (without it rank 0 evaluates the whole validation set)

`CausalLMObjective` is the default: NLL summed over target tokens (labels != -100), so the loss
of a micro-batch is the mean NLL per reply token.
"""

from __future__ import annotations

from typing import Protocol

import torch

from tunelab.data.tokenize import IGNORE, TokenizedExample, collate
from tunelab.losses import reply_loss_sum, reply_nll


class Objective(Protocol):
    def collate(self, examples: list) -> dict[str, torch.Tensor]: ...

    def loss_sum(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]: ...

    def evaluate(self, model, examples: list, amp: torch.dtype | None) -> dict[str, float]: ...

    def length(self, example) -> int: ...

    def trained_tokens(self, batch: dict[str, torch.Tensor], count: int) -> int: ...


class CausalLMObjective:
    """Next-token NLL on target positions (the replies, or every token for pretraining)."""

    def __init__(self, pad_id: int, eval_batch_size: int = 8):
        self.pad_id = pad_id
        self.eval_batch_size = eval_batch_size

    def collate(self, examples: list[TokenizedExample]) -> dict[str, torch.Tensor]:
        return collate(examples, self.pad_id)

    def loss_sum(self, model, batch):
        return reply_loss_sum(model, batch["input_ids"], batch["attention_mask"], batch["labels"])

    def evaluate(self, model, examples, amp):
        return {"val_loss": reply_nll(model, examples, self.pad_id, self.eval_batch_size, amp)}

    def evaluate_sums(self, model, examples, amp) -> tuple[float, int]:
        """(summed NLL, target tokens) over `examples`: the parts of val_loss that add up over ranks
        (targets: labels[1:] != -100 of each example, the positions `reply_loss_sum` counts)."""
        count = sum(sum(t != IGNORE for t in ex.labels[1:]) for ex in examples)
        return reply_nll(model, examples, self.pad_id, self.eval_batch_size, amp) * count, count

    def length(self, example: TokenizedExample) -> int:
        return len(example.input_ids)

    def trained_tokens(self, batch, count: int) -> int:
        return count
