"""The fused head + cross-entropy (ops/linear_ce.py) equals F.cross_entropy(h @ W.T, t) in value
and gradients, whatever the chunking, with the head frozen or trained, and under autocast."""

import pytest
import torch
import torch.nn.functional as F

from tunelab.ops.linear_ce import linear_cross_entropy_sum


def _data(p=37, d=16, v=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(p, d, generator=g), torch.randn(v, d, generator=g), torch.randint(0, v, (p,), generator=g)


@pytest.mark.parametrize("chunk", [1, 8, 37, 1024])
@pytest.mark.parametrize("head_trains", [False, True])
def test_value_and_gradients_equal_cross_entropy(chunk, head_trains):
    h0, w0, t = _data()
    h_ref, w_ref = h0.clone().requires_grad_(), w0.clone().requires_grad_(head_trains)
    ref = F.cross_entropy(h_ref @ w_ref.t(), t, reduction="sum")
    (2.5 * ref).backward()  # a non-unit upstream gradient reaches both
    h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_(head_trains)
    out = linear_cross_entropy_sum(h, w, t, chunk=chunk)
    (2.5 * out).backward()
    assert torch.allclose(out, ref, atol=1e-4)
    assert torch.allclose(h.grad, h_ref.grad, atol=1e-5)
    if head_trains:
        assert torch.allclose(w.grad, w_ref.grad, atol=1e-5)
    else:
        assert w.grad is None


def test_no_grad_gives_the_loss_and_nothing_else():
    h, w, t = _data()
    with torch.no_grad():
        out = linear_cross_entropy_sum(h, w, t, chunk=8)
    assert not out.requires_grad
    assert torch.allclose(out, F.cross_entropy(h @ w.t(), t, reduction="sum"), atol=1e-4)


def test_under_bf16_autocast_it_matches_cross_entropy_to_bf16_precision():
    h0, w0, t = _data(p=20, d=32, v=64)
    h_ref = h0.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.cross_entropy((h_ref @ w0.t()).float(), t, reduction="sum")
    ref.backward()
    h = h0.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear_cross_entropy_sum(h, w0, t, chunk=7)
    out.backward()
    assert h.grad.dtype == torch.float32
    assert torch.allclose(out, ref, rtol=2e-2)
    assert torch.allclose(h.grad, h_ref.grad, atol=5e-2)


def test_empty_selection_is_a_zero_loss_that_still_backpropagates():
    h = torch.randn(0, 8, requires_grad=True)
    w = torch.randn(10, 8)
    out = linear_cross_entropy_sum(h, w, torch.zeros(0, dtype=torch.long))
    out.backward()
    assert out.item() == 0.0 and h.grad.shape == (0, 8)


def test_training_loss_uses_it_and_matches_the_plain_head(tiny_model_dir):
    """reply_loss_sum on a real (tiny) Llama: the fused path gives the plain path's loss and gradients."""
    from transformers import AutoModelForCausalLM

    from tunelab.losses import reply_loss_sum

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = torch.randint(5, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :6] = -100
    loss, n = reply_loss_sum(model, ids, torch.ones_like(ids), labels)
    loss.backward()
    fused = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    ref = F.cross_entropy(model(input_ids=ids).logits[:, :-1].reshape(-1, model.config.vocab_size),
                          labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
    ref.backward()
    assert n == 2 * 10 and torch.allclose(loss, ref, atol=1e-4)
    for k, p in model.named_parameters():
        assert torch.allclose(fused[k], p.grad, atol=1e-5), k


def test_evaluation_of_a_trainable_head_computes_no_gradient(monkeypatch):
    """Under no_grad only the loss is formed, even when the weight requires grad (full fine-tuning's eval)."""
    import tunelab.ops.linear_ce as lce

    h, w, t = _data()
    w.requires_grad_(True)
    asked = []
    real = lce._chunked
    monkeypatch.setattr(lce, "_chunked", lambda *a: asked.append(a[4:]) or real(*a))
    with torch.no_grad():
        out = linear_cross_entropy_sum(h, w, t, chunk=8)
    assert asked == [(False, False)]
    assert torch.allclose(out, F.cross_entropy(h @ w.t(), t, reduction="sum"), atol=1e-4)


def test_the_memory_estimate_uses_the_same_chunk():
    """memory/estimator.py stays torch-free, so it repeats the chunk size; the two must agree."""
    from tunelab.ops.linear_ce import CHUNK
    from tunelab.ops.chunking import LOSS_CHUNK

    assert CHUNK == LOSS_CHUNK


def test_rows_are_cut_into_equal_chunks():
    """The loss and the memory estimate share one rule: ceil(P / 1,024) chunks of equal size."""
    from tunelab.ops.chunking import loss_chunk_rows

    assert [loss_chunk_rows(p) for p in (0, 5, 1024, 1025, 1058, 2048, 3000)] == [0, 5, 1024, 513, 529, 1024, 1000]
    assert loss_chunk_rows(37, 8) == 8 and loss_chunk_rows(33, 8) == 7  # 5 chunks of <= 8 rows
