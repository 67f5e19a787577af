"""ops/shared_prefix.py: a batch's common opening runs once, and loss and gradients stay those of
one pass over the whole sequences."""

import pytest
import torch

from tunelab import losses as metrics
from tunelab.data.tokenize import IGNORE
from tunelab.models.structure import decoder_and_head
from tunelab.ops.shared_prefix import MIN_PREFIX, can_share, shared_prefix_length


def _batch(prefix: int, lengths: list[int], reply_from: int, vocab: int = 100, seed: int = 0):
    """Right-padded rows: a common opening of `prefix` tokens, then each row's own tokens; labels learned
    from position `reply_from` on."""
    g = torch.Generator().manual_seed(seed)
    n = max(lengths)
    opening = torch.randint(3, vocab, (prefix,), generator=g)
    ids = torch.zeros(len(lengths), n, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE)
    for i, L in enumerate(lengths):
        ids[i, :prefix] = opening
        ids[i, prefix:L] = torch.randint(3, vocab, (L - prefix,), generator=g)
        mask[i, :L] = 1
        labels[i, reply_from:L] = ids[i, reply_from:L]
    return ids, mask, labels


def test_length_is_the_common_real_opening_before_any_learned_target():
    ids, mask, labels = _batch(12, [30, 25, 18], reply_from=20)
    assert shared_prefix_length(ids, mask, labels) == 12
    # a learned target at position 10 needs the hidden state at 9: the prefix stops at 9
    ids, mask, labels = _batch(12, [30, 25, 18], reply_from=10)
    assert shared_prefix_length(ids, mask, labels) == 9
    # every row keeps at least one token of its own
    ids, mask, labels = _batch(12, [30, 12, 18], reply_from=20)
    assert shared_prefix_length(ids, mask, labels) == 11
    # one row, or an opening shorter than MIN_PREFIX: nothing to share
    ids, mask, labels = _batch(12, [30], reply_from=20)
    assert shared_prefix_length(ids, mask, labels) == 0
    ids, mask, labels = _batch(MIN_PREFIX - 1, [30, 25], reply_from=20)
    assert shared_prefix_length(ids, mask, labels) == 0


def test_padding_is_never_shared():
    ids, mask, labels = _batch(12, [30, 30], reply_from=20)
    assert shared_prefix_length(ids, mask, labels) == 12
    mask[1, 9] = 0  # a masked position inside the opening (same ids, but not a real token) ends it there
    assert shared_prefix_length(ids, mask, labels) == 9
    assert shared_prefix_length(ids, None, labels) == 12  # no mask: every position is real


def _loss_and_grads(model, ids, mask, labels, share: bool, monkeypatch):
    monkeypatch.setattr(metrics, "shared_prefix_length",
                        shared_prefix_length if share else (lambda *a: 0))
    model.zero_grad(set_to_none=True)
    loss, n = metrics.reply_loss_sum(model, ids, mask, labels)
    (loss / n).backward()
    return float(loss.detach()), n, {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def test_shared_opening_gives_the_same_loss_and_gradients(tiny_lora, monkeypatch):
    model = tiny_lora()
    model.train()
    ids, mask, labels = _batch(12, [30, 25, 18, 30], reply_from=16, vocab=model.config.vocab_size)
    assert can_share(decoder_and_head(model)[0])
    calls = []
    import tunelab.ops.shared_prefix as sp

    orig = sp.decode_after_prefix
    monkeypatch.setattr(metrics, "decode_after_prefix", lambda *a: calls.append(a[3]) or orig(*a))
    shared = _loss_and_grads(model, ids, mask, labels, True, monkeypatch)
    assert calls == [12]  # the opening went through once
    plain = _loss_and_grads(model, ids, mask, labels, False, monkeypatch)
    assert shared[1] == plain[1] > 0
    assert shared[0] == pytest.approx(plain[0], rel=1e-5)
    assert shared[2].keys() == plain[2].keys()
    for k in plain[2]:
        torch.testing.assert_close(shared[2][k], plain[2][k], rtol=1e-4, atol=1e-6)


def test_evaluation_shares_too_and_gives_the_same_nll(tiny_lora, monkeypatch):
    model = tiny_lora()
    model.eval()
    ids, mask, labels = _batch(10, [22, 17, 29], reply_from=12, vocab=model.config.vocab_size, seed=3)
    with torch.no_grad():
        shared, n1 = metrics.reply_loss_sum(model, ids, mask, labels)
        monkeypatch.setattr(metrics, "shared_prefix_length", lambda *a: 0)
        plain, n2 = metrics.reply_loss_sum(model, ids, mask, labels)
    assert n1 == n2 and float(shared) == pytest.approx(float(plain), rel=1e-5)


def test_checkpointed_training_shares_and_matches_the_plain_pass(tiny_lora, monkeypatch):
    """Under our checkpointing the opening still runs once, the adapted blocks are recomputed in
    backward (reading the same prefix), and loss and gradients equal the plain un-checkpointed pass."""
    from tunelab.models.structure import blocks_list
    from tunelab.train.activation_ckpt import enable

    model = tiny_lora()
    model.train()
    ids, mask, labels = _batch(12, [30, 25, 18, 30], reply_from=16, vocab=model.config.vocab_size)
    plain = _loss_and_grads(model, ids, mask, labels, False, monkeypatch)
    enable(model)
    decoder = decoder_and_head(model)[0]
    assert can_share(decoder)
    attn_calls = []
    h = blocks_list(decoder)[-1].self_attn.register_forward_pre_hook(lambda m, a, k: attn_calls.append(1), with_kwargs=True)
    shared = _loss_and_grads(model, ids, mask, labels, True, monkeypatch)
    h.remove()
    assert len(attn_calls) == 3  # pass 1 (the opening), pass 2, pass 2's recompute in backward
    assert all(not getattr(b, "_can_checkpoint_with_cache", False) for b in blocks_list(decoder))  # restored
    assert all(b.gradient_checkpointing for b in blocks_list(decoder))
    assert shared[1] == plain[1]
    assert shared[0] == pytest.approx(plain[0], rel=1e-5)
    for k in plain[2]:
        torch.testing.assert_close(shared[2][k], plain[2][k], rtol=1e-4, atol=1e-6)


def test_reply_loss_sum_switches_each_saving_off_with_the_same_result(tiny_lora):
    """share_opening / skip_padding False (what benchmarks/train_savings.py compares against) do the
    full work: the first MLP sees every position of every row, and loss and gradients do not move."""
    from tunelab.models.structure import blocks_list

    model = tiny_lora()
    model.train()
    ids, mask, labels = _batch(12, [30, 25, 18], reply_from=20, vocab=model.config.vocab_size)
    mlp = blocks_list(decoder_and_head(model)[0])[0].mlp
    rows: list[int] = []
    h = mlp.down_proj.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[:-1].numel()))
    results = {}
    for share in (True, False):
        for skip in (True, False):
            rows.clear()
            model.zero_grad(set_to_none=True)
            loss, n = metrics.reply_loss_sum(model, ids, mask, labels, share_opening=share, skip_padding=skip)
            (loss / n).backward()
            results[share, skip] = (list(rows), float(loss.detach()), n,
                                    [p.grad.clone() for p in model.parameters() if p.requires_grad])
    h.remove()
    # the opening (12 positions, one row), then the rest: real (18 + 13 + 6) or padded (3 x 18)
    assert results[True, True][0] == [12, 37]
    assert results[True, False][0] == [12, 54]
    assert results[False, True][0] == [73]  # 30 + 25 + 18 real positions
    assert results[False, False][0] == [90]  # 3 rows x 30
    ref = results[True, True]
    for key, (_, loss, n, grads) in results.items():
        assert n == ref[2] and loss == pytest.approx(ref[1], rel=1e-5), key
        for g, r in zip(grads, ref[3]):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
