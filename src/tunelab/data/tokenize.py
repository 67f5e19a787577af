"""Tokenize rendered conversations with label masks, and batch them.

    ids    = concat(tokenize(segment) for segment in template.segments(messages))
    labels = ids where the segment is a target (the replies + end of turn), else -100

So with `train_on: reply` (default) the loss covers exactly the reply tokens of every assistant
turn (a tool call is a reply; a tool's output is not; a think block as data.reasoning says); `train_on: last`
only the final assistant turn's; `train_on: all` learns every token. Truncation keeps `max_length` tokens from
the right (drop the end) or the left (drop the start); an example left with no target token is dropped and counted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from tunelab.data.formats import ChatExample
from tunelab.data.reasoning import drop_earlier_reasoning, mask_reasoning
from tunelab.data.templates import Template
from tunelab.errors import TunelabError

IGNORE = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    where: str = ""
    truncated: int = 0  # tokens cut by max_length

    @property
    def n_target(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def encode_segments(tokenizer, segments) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    labels: list[int] = []
    for text, is_target in segments:
        seg = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += seg
        labels += seg if is_target else [IGNORE] * len(seg)
    return ids, labels


def example_segments(ex: ChatExample, template: Template, reasoning: str = "learn",
                     earlier_reasoning: str = "drop") -> list[tuple[str, bool]]:
    """The template's (text, is_target) segments of an example, reasoning handled as data.reasoning and
    data.earlier_reasoning say (data/reasoning.py)."""
    msgs = drop_earlier_reasoning(ex.messages) if earlier_reasoning == "drop" else ex.messages
    try:
        segments = template.segments(msgs, tools=ex.tools or None)
    except TunelabError as e:  # name the example: "data.template (d.jsonl:3): template 'gemma' has no tool-call ..."
        raise TunelabError(e.message, where=f"{e.where} ({ex.where})" if ex.where else e.where, hint=e.hint) from None
    return mask_reasoning(segments, learn=reasoning == "learn")


def tokenize_example(ex: ChatExample, template: Template, tokenizer, max_length: int,
                     truncation_side: str = "right", train_on: str = "reply", reasoning: str = "learn",
                     earlier_reasoning: str = "drop") -> TokenizedExample:
    segments = example_segments(ex, template, reasoning, earlier_reasoning)
    if train_on == "last":  # keep only the final target segment (the last reply) as a target
        last = max((i for i, (_, tgt) in enumerate(segments) if tgt), default=-1)
        segments = [(text, tgt and i == last) for i, (text, tgt) in enumerate(segments)]
    ids, labels = encode_segments(tokenizer, segments)
    if train_on == "all":
        labels = list(ids)
    cut = max(0, len(ids) - max_length)
    if cut:
        if truncation_side == "right":
            ids, labels = ids[:max_length], labels[:max_length]
        else:
            ids, labels = ids[cut:], labels[cut:]
    return TokenizedExample(ids, labels, ex.where, cut)


def tokenize_all(examples, template, tokenizer, max_length, truncation_side="right", train_on="reply",
                 reasoning="learn", earlier_reasoning="drop"):
    """Returns (kept examples, number dropped because truncation left no target token)."""
    out, dropped = [], 0
    for ex in examples:
        t = tokenize_example(ex, template, tokenizer, max_length, truncation_side, train_on, reasoning,
                             earlier_reasoning)
        if t.n_target == 0:
            dropped += 1
            continue
        out.append(t)
    return out, dropped


def collate(batch: list[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of the batch; padding is masked in attention and labels."""
    n = max(len(b.input_ids) for b in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, b in enumerate(batch):
        L = len(b.input_ids)
        ids[i, :L] = torch.tensor(b.input_ids)
        labels[i, :L] = torch.tensor(b.labels)
        mask[i, :L] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def make_batches(examples: list, batch_size: int, seed: int, epoch: int,
                 group_by_length: bool = True, length=lambda ex: len(ex.input_ids)) -> list[list[int]]:
    """Index batches for one epoch, deterministic in (seed, epoch).

    group_by_length: shuffle, cut into chunks of 50 batches, sort each chunk by length, then
    shuffle the batches: examples of similar length share a batch, so little compute is spent
    on padding (e.g. lengths 40 and 200 in one batch waste 160 of 400 token slots).
    """
    rng = random.Random(seed * 1000 + epoch)
    idx = list(range(len(examples)))
    rng.shuffle(idx)
    if group_by_length:
        chunk = batch_size * 50
        idx = [i for s in range(0, len(idx), chunk)
               for i in sorted(idx[s:s + chunk], key=lambda j: length(examples[j]))]
    batches = [idx[s:s + batch_size] for s in range(0, len(idx), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches
