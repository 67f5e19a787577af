"""Run a batch's common opening once: the shared prefix goes through the decoder as one row, its
keys and values are repeated for every row, and only the rest of each sequence runs batched.

Chat data repeats the same opening in every example: the template's system turn (SmolLM2: "You are
a helpful AI assistant named SmolLM, ..." = 24 tokens), a custom instructions string, a fixed task
preamble. With causal attention the hidden states of those P positions do not depend on what
follows, so for a batch of B rows they are the same B times. Here they are computed once:

    pass 1: decoder(ids[0, :P])                      -> keys/values of P positions, every layer
    pass 2: decoder(ids[:, P:], past = those x B)   -> hidden states of positions P..n-1

Exact: every suffix position attends to the same keys and values as in one pass over the whole
sequence (positions P.., the same causal/padding mask). Gradients reach the prefix's adapted
layers through the repeat (summed over the B rows), as they would through B copies.

Saving: (B - 1) x P token-positions of every block per micro-batch, i.e. a fraction (B - 1) P / (B n)
of the batch's B x n positions (the Python-FAQ benchmark's figure: docs/performance.md).

Conditions (`shared_prefix_length`): the first P tokens are equal and real (not padding) in every
row, each row has at least one token after them, and no learned target lies in positions 1..P (the
loss needs no hidden state inside the prefix; chat templates put the reply after the prompt).
Used only with transformers' DynamicCache of plain (append-only, full-attention) layers.

Under gradient checkpointing a block's forward runs again in backward, and transformers turns the
cache off inside checkpointed blocks, because a block that writes to the cache would append the
same keys twice. So pass 1 (one row of P positions: its activations are small) runs with the
blocks' checkpointing suspended, and pass 2 reads the prefix through a read-only cache: `update`
returns prefix + new keys/values without storing them, so the forward and its recompute see the
same prefix, and the blocks may keep it while checkpointed (`_can_checkpoint_with_cache`).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from tunelab.data.tokenize import IGNORE

MIN_PREFIX = 8  # below this the second decoder call costs more than it saves


def _first_false(flags: torch.Tensor) -> int:
    """Index of the first False in a 1-D bool tensor (its length when all are True)."""
    bad = (~flags).nonzero()
    return int(bad[0]) if len(bad) else int(flags.numel())


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                         labels: torch.Tensor | None) -> int:
    """P >= MIN_PREFIX that can be shared (see module doc), else 0. Rows are right-padded."""
    b, n = input_ids.shape
    if b < 2 or n <= MIN_PREFIX:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0)  # position j holds one token in every row
    shortest = n
    if attention_mask is not None:
        same &= attention_mask.bool().all(dim=0)
        shortest = int(attention_mask.sum(dim=1).min())
    p = min(_first_false(same), shortest - 1)  # leave every row one token of its own
    if labels is not None:
        unlearned = (labels == IGNORE).all(dim=0)  # labels[:, j]: the target predicted from position j - 1
        p = min(p, _first_false(unlearned[1:]))  # labels[:, 1..P] must all be IGNORE
    return p if p >= MIN_PREFIX else 0


def _new_cache(decoder):
    """An empty cache for `decoder` whose layers all append (DynamicLayer), else None."""
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache(config=decoder.config)
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    layers = getattr(cache, "layers", None)
    return cache if layers and all(type(layer) is DynamicLayer for layer in layers) else None


def can_share(decoder) -> bool:
    """The decoder takes past keys/values and its cache is a plain DynamicCache (see module doc)."""
    return getattr(getattr(decoder, "config", None), "use_cache", None) is not None and _new_cache(decoder) is not None


def _read_only(cache):
    """Make `cache.update(k, v, layer)` return (past keys + k, past values + v) without storing them."""
    def update(key_states, value_states, layer_idx, *args, **kwargs):
        layer = cache.layers[layer_idx]
        return torch.cat([layer.keys, key_states], dim=-2), torch.cat([layer.values, value_states], dim=-2)

    cache.update = update
    return cache


_UNSET = object()


@contextmanager
def _blocks_set(decoder, **attrs):
    """Set attributes on every transformer block of `decoder` for the length of the context."""
    from tunelab.models.structure import blocks_list

    blocks = list(blocks_list(decoder) or [])
    saved = [{k: b.__dict__.get(k, _UNSET) for k in attrs} for b in blocks]
    for b in blocks:
        for k, v in attrs.items():
            setattr(b, k, v)
    try:
        yield
    finally:
        for b, old in zip(blocks, saved):
            for k, v in old.items():
                if v is _UNSET:
                    delattr(b, k)
                else:
                    setattr(b, k, v)


def decode_after_prefix(decoder, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, p: int) -> torch.Tensor:
    """Last hidden states of positions p..n-1 (B x (n - p) x d), the first p positions run once."""
    cache = _new_cache(decoder)
    with _blocks_set(decoder, gradient_checkpointing=False):  # 1 x p positions: keep, do not recompute
        decoder(input_ids=input_ids[:1, :p], past_key_values=cache, use_cache=True)
    cache.batch_repeat_interleave(input_ids.shape[0])  # the prefix's keys/values for every row
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    with _blocks_set(decoder, _can_checkpoint_with_cache=True):  # safe: the cache is read-only now
        return decoder(input_ids=input_ids[:, p:], attention_mask=attention_mask, past_key_values=_read_only(cache),
                       use_cache=False).last_hidden_state
