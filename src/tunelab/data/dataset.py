"""From `data:` config to train/validation example lists (deterministic in the seed)."""

from __future__ import annotations

import random

from tunelab.config import RunConfig
from tunelab.data.formats import ChatExample, to_examples
from tunelab.data.sources import read_records
from tunelab.errors import TunelabError


def load_examples(path: str, fmt: str, field: str) -> list[ChatExample]:
    return to_examples(read_records(path, field), fmt)


def load_splits(cfg: RunConfig) -> tuple[list[ChatExample], list[ChatExample]]:
    """Train and validation examples: the validation file if given, else a seeded `val_split` of train."""
    d = cfg.data
    train = load_examples(str(cfg.path(d.train)), d.format, "data.train")
    if d.validation:
        val = load_examples(str(cfg.path(d.validation)), d.format, "data.validation")
    elif d.val_split > 0:
        idx = list(range(len(train)))
        random.Random(d.seed).shuffle(idx)
        n_val = max(1, round(len(train) * d.val_split))
        if n_val >= len(train):
            raise TunelabError(f"val_split {d.val_split} leaves no training examples ({len(train)} in all)",
                               where="data.val_split", hint="lower it or add data")
        val_idx = set(idx[:n_val])
        val = [train[i] for i in sorted(val_idx)]
        train = [train[i] for i in range(len(train)) if i not in val_idx]
    else:
        val = []
    return train, val
