"""NF4/FP4/int4 codecs: bitsandbytes byte parity, double quantization, bits/param, error bounds."""

from __future__ import annotations

import pytest
import torch

from tunelab.quant import codecs


def _bnb():
    return pytest.importorskip("bitsandbytes.functional")


# (3, 5, 96), (2, 96): rows that are not whole 64-blocks (see test_non_aligned_shape_decodes_by_hand)
SHAPES = [(64, 64), (4, 3, 128), (33, 17), (1000,), (7,), (3, 5, 96), (2, 96)]


def by_hand(packed: torch.Tensor, absmax: torch.Tensor, fmt: str, n: int, blocksize: int = 64) -> torch.Tensor:
    """The 4-bit format's definition, element by element: code_book[nibble] * absmax[block], fp32.
    Byte j holds elements 2j (high nibble) and 2j+1 (low nibble); element i is in block i // blocksize."""
    nib = torch.stack([packed >> 4, packed & 15], dim=1).reshape(-1).long()[:n]
    return codecs.code_book(fmt)[nib] * absmax.float().repeat_interleave(blocksize)[:n]


@pytest.mark.parametrize("fmt", ["nf4", "fp4"])
def test_code_books_equal_bitsandbytes(fmt):
    F = _bnb()
    assert torch.equal(codecs.code_book(fmt), F.get_4bit_type(fmt, device="cpu"))


def test_dynamic_map_equals_bitsandbytes():
    F = _bnb()
    assert torch.equal(codecs.dynamic_map(), F.create_dynamic_map())


@pytest.mark.parametrize("fmt", ["nf4", "fp4"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_packed_bytes_and_absmax_identical_to_bitsandbytes(fmt, shape, dtype):
    F = _bnb()
    torch.manual_seed(hash((fmt, shape)) % 1000)
    x = (torch.randn(shape) * 3).to(dtype)
    ref, state = F.quantize_4bit(x, blocksize=64, quant_type=fmt)
    ours = codecs.quantize_4bit(x, fmt, 64)
    assert torch.equal(ours.packed, ref.reshape(-1))
    assert torch.equal(ours.absmax, state.absmax)
    # our decode is the format's definition (fp32 products, then cast), for every shape
    n = x.numel()
    decoded = codecs.dequantize_4bit(ours, dtype)
    assert decoded.shape == x.shape and decoded.dtype == dtype
    assert torch.equal(decoded.reshape(-1), by_hand(ours.packed, ours.absmax, fmt, n).to(dtype))
    # and bitsandbytes' decode agrees where it is reliable: rows of whole blocks. bitsandbytes 0.49/0.50's
    # AVX-512 CPU kernel scales the elements of other shapes by the wrong absmax (from index 128 on for
    # (3, 5, 96)); the scalar kernel of AVX2 CPUs is right. docs/quantization.md has the reproduction.
    if x.shape[-1] % 64 == 0:
        assert torch.equal(decoded.reshape(-1), F.dequantize_4bit(ref, state).reshape(-1))


@pytest.mark.parametrize("fmt", ["nf4", "fp4"])
def test_double_quant_reads_bitsandbytes_state_exactly(fmt):
    F = _bnb()
    torch.manual_seed(1)
    x = torch.randn(256, 320) * torch.rand(256, 1) * 4  # 1280 blocks -> 5 blocks of constants
    ref, state = F.quantize_4bit(x, blocksize=64, quant_type=fmt, compress_statistics=True)
    theirs = codecs.Packed4bit(ref.reshape(-1), state.absmax, tuple(x.shape), fmt, 64,
                               state.state2.absmax, state.offset)
    assert torch.equal(codecs.dequantize_4bit(theirs), F.dequantize_4bit(ref, state))
    ours = codecs.quantize_4bit(x, fmt, 64, double_quant=True)
    assert torch.equal(ours.packed, ref.reshape(-1))
    assert torch.equal(ours.absmax_scale, state.state2.absmax)
    assert torch.equal(ours.absmax_offset, state.offset)
    # bitsandbytes' CPU 8-bit search is approximate: codes agree except rare one-step neighbours
    diff = (ours.absmax.int() - state.absmax.int()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.99


@pytest.mark.parametrize("fmt", ["nf4", "fp4"])
def test_non_aligned_shape_decodes_by_hand(fmt):
    """(3, 5, 96) = 1440 values = 22 blocks of 64 + one of 32, cut across rows of 96: our codec is
    right on it (the shape bitsandbytes' AVX-512 CPU decoder gets wrong from element 128 on)."""
    torch.manual_seed(3)
    x = torch.randn(3, 5, 96) * torch.linspace(0.1, 4, 96)  # every block has its own scale
    q = codecs.quantize_4bit(x, fmt, 64)
    flat = x.reshape(-1)
    assert q.absmax.shape == (23,) and q.packed.shape == (720,)
    want_absmax = torch.stack([flat[b * 64:(b + 1) * 64].abs().max() for b in range(23)])
    assert torch.equal(q.absmax, want_absmax)  # the last block holds the 32 trailing values
    back = codecs.dequantize_4bit(q).reshape(-1)
    assert torch.equal(back, by_hand(q.packed, q.absmax, fmt, 1440))
    # each element decodes with its own block's absmax: the nearest code of x / absmax[i // 64]
    code = codecs.code_book(fmt)
    scale = want_absmax.repeat_interleave(64)[:1440]
    nearest = code[(flat[:, None] / scale[:, None] - code[None, :]).abs().argmin(dim=1)] * scale
    assert torch.allclose(back, nearest, rtol=0, atol=1e-6 * float(scale.max()))
    assert torch.equal(back[128:192].abs().max(), want_absmax[2])  # block 2 (row 1, columns 32..95): its max is exact


def test_blockwise_8bit_is_nearest_code():
    torch.manual_seed(0)
    x = torch.randn(1000)
    q, absmax = codecs.quantize_blockwise_8bit(x, 256)
    assert q.dtype == torch.uint8 and absmax.shape == (4,)
    normed = x / absmax.repeat_interleave(256)[:1000]
    dist = (normed[:, None] - codecs.dynamic_map()[None, :]).abs()
    best = dist.min(dim=1).values
    assert torch.equal(dist[torch.arange(1000), q.long()], best)
    back = codecs.dequantize_blockwise_8bit(q, absmax, 256)
    assert back.shape == x.shape and (back - x).abs().max() < 0.02 * x.abs().max()


def test_bits_per_param_formula_and_real_size():
    assert codecs.bits_per_param("nf4") == 4.5
    assert codecs.bits_per_param("nf4", double_quant=True) == pytest.approx(4 + 8 / 64 + 32 / 16384)
    assert round(codecs.bits_per_param("nf4", double_quant=True), 3) == 4.127
    x = torch.randn(512, 512)
    plain = codecs.quantize_4bit(x, "nf4", 64).nbytes() * 8 / x.numel()
    dq = codecs.quantize_4bit(x, "nf4", 64, double_quant=True).nbytes() * 8 / x.numel()
    assert plain == pytest.approx(4.5)
    assert dq == pytest.approx(4.127, abs=0.001)
    assert plain - dq == pytest.approx(0.373, abs=0.001)  # QLoRA: "~0.37 bits per parameter"


@pytest.mark.parametrize("fmt", ["nf4", "fp4", "int4"])
def test_round_trip_error_bounded_by_half_code_gap(fmt):
    torch.manual_seed(2)
    x = torch.randn(40, 64)
    q = codecs.quantize_4bit(x, fmt, 64)
    back = codecs.dequantize_4bit(q)
    code = codecs.code_book(fmt).sort().values
    code = code[(code >= -1) & (code <= 1)]
    half_gap = (code[1:] - code[:-1]).max() / 2
    absmax = x.view(-1, 64).abs().amax(1, keepdim=True)
    err = (back.view(-1, 64) - x.view(-1, 64)).abs()
    assert (err <= half_gap * absmax + 1e-6).all()
    # each block's largest value is exact (it maps to +-1)
    idx = x.view(-1, 64).abs().argmax(1)
    assert torch.allclose(back.view(-1, 64).gather(1, idx[:, None]), x.view(-1, 64).gather(1, idx[:, None]))


def test_int4_levels_are_multiples_of_absmax_over_7():
    x = torch.tensor([[7.0, 3.4, -3.6, 0.4, 0.6, -7.0] + [0.0] * 58])
    back = codecs.dequantize_4bit(codecs.quantize_4bit(x, "int4", 64))
    assert back[0, :6].tolist() == pytest.approx([7.0, 3.0, -4.0, 0.0, 1.0, -7.0])


def test_pack_layout_high_nibble_first():
    x = torch.tensor([-1.0, 1.0] + [0.0] * 62)
    q = codecs.quantize_4bit(x, "nf4", 64)
    assert q.packed[0].item() == (0 << 4) | 15  # nf4 index 0 = -1.0, index 15 = +1.0
    assert q.packed[1].item() == (7 << 4) | 7  # index 7 = 0.0


def test_unknown_format_raises():
    with pytest.raises(ValueError):
        codecs.quantize_4bit(torch.randn(64), "nf5")
