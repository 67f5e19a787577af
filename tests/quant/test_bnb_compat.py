"""Our bitsandbytes backend on CPU decodes weights whose rows are not whole 64-blocks with tunelab's
codec (bitsandbytes 0.49/0.50's AVX-512 kernel scales them wrongly), and every other weight with
bitsandbytes. Checked against the format's definition, so the result is the same on every CPU kind."""

from __future__ import annotations

import pytest
import torch

from tunelab.quant import bnb_compat, codecs


def _nested_absmax(state) -> torch.Tensor:
    """Double-quantized constants by hand: code[q] * scale[block of 256] + offset."""
    q = state.absmax.long()
    scale = state.state2.absmax.repeat_interleave(state.state2.blocksize)[: q.numel()]
    return state.state2.code[q] * scale + state.offset


def by_hand(packed: torch.Tensor, state) -> torch.Tensor:
    """code_book[nibble] * absmax[block] (fp32), element i in block i // blocksize, high nibble first."""
    n = 1
    for s in state.shape:
        n *= s
    absmax = _nested_absmax(state) if state.nested else state.absmax
    b = packed.reshape(-1).view(torch.uint8)
    nib = torch.stack([b >> 4, b & 15], dim=1).reshape(-1).long()[:n]
    return (codecs.code_book(state.quant_type)[nib] * absmax.float().repeat_interleave(state.blocksize)[:n]).view(
        state.shape)


@pytest.fixture
def routed(monkeypatch):
    """(bitsandbytes.functional, calls): routing installed; `calls` records each decode by tunelab's codec."""
    F = pytest.importorskip("bitsandbytes.functional")
    assert bnb_compat.route_unaligned_cpu_dequantize()
    assert bnb_compat.route_unaligned_cpu_dequantize()  # idempotent
    calls = []
    real = codecs.dequantize_4bit

    def counting(q, dtype=torch.float32):
        calls.append(q.shape)
        return real(q, dtype)

    monkeypatch.setattr(codecs, "dequantize_4bit", counting)
    return F, calls


def test_rows_of_whole_blocks():
    assert bnb_compat.rows_of_whole_blocks((64, 64), 64) and bnb_compat.rows_of_whole_blocks((4, 3, 128), 64)
    assert not bnb_compat.rows_of_whole_blocks((3, 5, 96), 64) and not bnb_compat.rows_of_whole_blocks((1000,), 64)
    assert not bnb_compat.rows_of_whole_blocks((), 64)


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("fmt", ["nf4", "fp4"])
@pytest.mark.parametrize("shape, ours", [((3, 5, 96), True), ((40, 96), True), ((33, 17), True),
                                         ((32, 128), False), ((64, 64), False)])
def test_dequantize_4bit_on_cpu(routed, shape, ours, fmt, double_quant):
    F, calls = routed
    torch.manual_seed(0)
    w = torch.randn(shape) * torch.rand(shape[-1]) * 3
    q, state = F.quantize_4bit(w, blocksize=64, quant_type=fmt, compress_statistics=double_quant)
    got = F.dequantize_4bit(q, state)
    assert got.shape == w.shape and got.dtype == w.dtype
    assert torch.equal(got, by_hand(q, state))  # element 128 onwards included
    assert bool(calls) == ours  # tunelab's codec exactly when the rows are not whole blocks


@pytest.mark.parametrize("in_features, ours", [(96, True), (128, False)])
def test_linear4bit_forward_and_backward_on_cpu(routed, in_features, ours):
    """Linear4bit's training forward (gemm_4bit op) and backward (dequantize_4bit) on CPU."""
    import bitsandbytes as bnb

    _, calls = routed
    torch.manual_seed(1)
    lin = torch.nn.Linear(in_features, 32)
    layer = bnb.nn.Linear4bit(in_features, 32, compute_dtype=torch.float32, quant_type="nf4")
    layer.load_state_dict(lin.state_dict())
    layer = layer.to("cpu")  # quantizes (double-quantized constants by default)
    w = by_hand(layer.weight.data, layer.weight.quant_state)
    x = torch.randn(5, in_features, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y, torch.nn.functional.linear(x, w, layer.bias))
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(5, 32) @ w)
    assert (len(calls) >= 2) if ours else not calls  # forward and backward, or neither


def test_tunelab_codec_reads_bitsandbytes_state_without_copying():
    F = pytest.importorskip("bitsandbytes.functional")
    w = torch.randn(3, 5, 96)
    q, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    p = bnb_compat.packed_from_quant_state(q, state)
    assert p.double_quant and p.shape == (3, 5, 96) and p.packed.data_ptr() == q.data_ptr()
    assert torch.equal(codecs.dequantize_4bit(p), by_hand(q, state))
    assert bnb_compat.packed_from_parts(q, (3, 5, 96), state.absmax, 64, "int4") is None  # not a bnb format
