"""How the fused head + loss (ops/linear_ce.py) cuts its rows into chunks: one rule, read by the loss and
by the memory estimate (which stays torch-free, so the rule lives in this pure-Python module)."""

from __future__ import annotations

LOSS_CHUNK = 1024  # positions per chunk of the fused head + loss


def loss_chunk_rows(positions: int, most: int = LOSS_CHUNK) -> int:
    """Rows per chunk of the fused head + loss: `positions` rows cut into n = ceil(positions / most)
    equal chunks of ceil(positions / n) rows (1,058 -> 2 x 529, not 1,024 + 34; 0 -> 0).
    Shared by ops/linear_ce.py (the chunks it runs) and the estimate (the logits alive at once)."""
    if positions <= 0:
        return 0
    n = -(-positions // most)
    return -(-positions // n)
