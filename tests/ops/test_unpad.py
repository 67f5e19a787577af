"""ops/unpad.py: block MLPs see only the real (non-padding) positions; loss and gradients of the
real positions are those of the padded run."""

import contextlib

import pytest
import torch

from tunelab import losses as metrics
from tunelab.data.tokenize import IGNORE
from tunelab.models.structure import blocks_list, decoder_and_head
from tunelab.ops.unpad import mlp_on_real_rows


def _padded(vocab: int, lengths=(14, 9, 5)):
    g = torch.Generator().manual_seed(0)
    n = max(lengths)
    ids = torch.zeros(len(lengths), n, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, L in enumerate(lengths):
        ids[i, :L] = torch.randint(3, vocab, (L,), generator=g)  # rows differ from the first token: no shared prefix
        mask[i, :L] = 1
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, IGNORE))
    labels[:, :2] = IGNORE
    return ids, mask, labels


def _run(model, ids, mask, labels):
    model.zero_grad(set_to_none=True)
    loss, n = metrics.reply_loss_sum(model, ids, mask, labels)
    (loss / n).backward()
    return float(loss.detach()), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def test_mlps_see_only_real_rows_and_results_match(tiny_lora, monkeypatch):
    model = tiny_lora().train()
    ids, mask, labels = _padded(model.config.vocab_size)
    decoder = decoder_and_head(model)[0]
    seen = []
    mlp = blocks_list(decoder)[0].mlp
    h = mlp.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape)))  # registered before ours: sees the input as given
    unpadded = _run(model, ids, mask, labels)
    h.remove()
    assert seen == [(3, 14, model.config.hidden_size)]
    inner = []
    h = mlp.gate_proj.register_forward_pre_hook(lambda m, a: inner.append(a[0].shape[:-1].numel()))
    _run(model, ids, mask, labels)
    h.remove()
    assert inner == [int(mask.sum())] == [28]  # the MLP's matmuls ran on the 28 real positions of 42
    monkeypatch.setattr(metrics, "mlp_on_real_rows", lambda *a: contextlib.nullcontext())
    padded = _run(model, ids, mask, labels)
    assert unpadded[0] == pytest.approx(padded[0], rel=1e-5)
    for k in padded[1]:
        torch.testing.assert_close(unpadded[1][k], padded[1][k], rtol=1e-4, atol=1e-6)


def test_no_hooks_without_padding_with_checkpointing_or_after_the_context(tiny_lora):
    model = tiny_lora().train()
    decoder = decoder_and_head(model)[0]
    mlps = [b.mlp for b in blocks_list(decoder)]

    def hooked():
        return any(m._forward_pre_hooks or m._forward_hooks for m in mlps)

    full = torch.ones(2, 6, dtype=torch.long)
    with mlp_on_real_rows(decoder, full):
        assert not hooked()  # no padding: nothing to skip
    part = full.clone()
    part[1, 4:] = 0
    with mlp_on_real_rows(decoder, part):
        assert hooked()
    assert not hooked()  # removed on exit
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with mlp_on_real_rows(decoder, part):
        assert not hooked()  # checkpointing without our replay would recompute the MLPs without the hooks


def test_checkpointed_recompute_replays_the_hooks_and_results_match(tiny_lora, monkeypatch):
    """Under `activation_ckpt.enable` the MLPs run on real rows in the forward and again in the
    recompute (backward, after the context closed); loss and gradients equal the padded run."""
    from tunelab.ops.recompute import replays_per_call_state
    from tunelab.train.activation_ckpt import enable

    model = tiny_lora().train()
    ids, mask, labels = _padded(model.config.vocab_size)
    monkeypatch.setattr(metrics, "mlp_on_real_rows", lambda *a: contextlib.nullcontext())
    padded = _run(model, ids, mask, labels)
    monkeypatch.undo()
    enable(model)
    decoder = decoder_and_head(model)[0]
    assert replays_per_call_state(decoder)
    inner = []
    h = blocks_list(decoder)[0].mlp.gate_proj.register_forward_pre_hook(lambda m, a: inner.append(a[0].shape[:-1].numel()))
    unpadded = _run(model, ids, mask, labels)
    h.remove()
    assert inner == [28, 28]  # forward and recompute, both on the 28 real positions of 42
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in (b.mlp for b in blocks_list(decoder)))
    assert unpadded[0] == pytest.approx(padded[0], rel=1e-5)
    for k in padded[1]:
        torch.testing.assert_close(unpadded[1][k], padded[1][k], rtol=1e-4, atol=1e-6)
