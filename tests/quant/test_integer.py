"""Integer codecs: worked examples from issue 3, granularities, error bounds, ternary packing."""

from __future__ import annotations

import pytest
import torch

from tunelab.quant import integer as I


def test_worked_example_symmetric_uint8():
    iq = I.quantize_symmetric(torch.tensor([0.0, 250.0, 1000.0]), bits=8, signed=False)
    assert iq.scale.item() == pytest.approx(1000 / 255)  # 3.92
    assert round(iq.scale.item(), 2) == 3.92
    assert iq.q.tolist() == [0, 64, 255]  # 250 / 3.92 = 63.75 -> 64
    assert iq.q.dtype == torch.uint8
    assert I.dequantize_int(iq)[1].item() == pytest.approx(64 * 1000 / 255)  # 250.98


def test_worked_example_asymmetric_uint8():
    iq = I.quantize_asymmetric(torch.tensor([-20.0, 0.0, 500.0, 1000.0]))
    assert iq.scale.item() == pytest.approx(4.0)  # 1020 / 255
    assert iq.zero_point.item() == 5  # round(20 / 4)
    assert iq.q.tolist() == [0, 5, 130, 255]  # 500 / 4 + 5 = 130
    assert I.dequantize_int(iq).tolist() == pytest.approx([-20.0, 0.0, 500.0, 1000.0])


def test_int8_symmetric_range_and_zero():
    x = torch.tensor([-3.0, -1.5, 0.0, 1.0, 3.0])
    iq = I.quantize_symmetric(x)
    assert iq.q.tolist() == [-127, -64, 0, 42, 127]  # -1.5 / (3/127) = -63.5 -> -64 (half to even)
    assert iq.q.dtype == torch.int8


@pytest.mark.parametrize("granularity,groups", [("tensor", 1), ("channel", 16), ("block", 16 * 96 // 64)])
def test_symmetric_error_bound_per_granularity(granularity, groups):
    torch.manual_seed(0)
    x = torch.randn(16, 96) * torch.logspace(-2, 1, 16)[:, None]  # rows of very different ranges
    iq = I.quantize_symmetric(x, granularity=granularity, blocksize=64)
    assert iq.scale.shape == (groups,)
    err = (I.dequantize_int(iq) - x).abs()
    # |x - x'| <= s / 2 for every value of its group
    bound = I._ungroup(I._groups(torch.ones_like(x), granularity, 64) * iq.scale[:, None] / 2, tuple(x.shape))
    assert (err <= bound + 1e-6).all()


def test_finer_granularity_is_more_accurate_on_uneven_rows():
    torch.manual_seed(0)
    x = torch.randn(16, 128) * torch.logspace(-2, 1, 16)[:, None]
    mse = {g: (I.dequantize_int(I.quantize_symmetric(x, granularity=g)) - x).pow(2).mean().item()
           for g in I.GRANULARITIES}
    assert mse["block"] < mse["tensor"] and mse["channel"] < mse["tensor"]


def test_asymmetric_beats_symmetric_on_skewed_data():
    torch.manual_seed(0)
    x = torch.rand(1000) * 10 + 1  # all positive: symmetric int8 wastes the negative half
    sym = (I.dequantize_int(I.quantize_symmetric(x)) - x).abs().max()
    asym = (I.dequantize_int(I.quantize_asymmetric(x)) - x).abs().max()
    assert asym < sym
    assert asym <= (x.max() / 255) / 2 + 1e-5


def test_casts_round_trip():
    x = torch.tensor([1.0, 1 / 3, 65504.0, 1e-8])
    assert I.cast(x, "fp16").dtype == torch.float16
    assert (I.cast(x, "bf16").float() - x).abs()[1] < 2 ** -9
    assert I.cast(x, "fp16").float()[3] == 0.0  # fp16 underflows below 6e-8; bf16 keeps it
    assert I.cast(x, "bf16").float()[3] > 0
    with pytest.raises(ValueError):
        I.cast(x, "fp8")


def test_ternary_absmean_and_packing():
    w = torch.tensor([[0.9, -0.05, 0.3, -1.2, 0.0, 0.5, -0.4]])
    gamma = I.ternary_scale(w)
    assert gamma.item() == pytest.approx(w.abs().mean().item())  # 3.35 / 7 = 0.4786
    t = I.quantize_ternary(w)
    assert t.packed.numel() == 2  # 7 weights -> 2 bytes (4 per byte)
    q = I.unpack_2bit(t.packed, 7)
    assert q.tolist() == [1, 0, 1, -1, 0, 1, -1]  # 0.3/0.4786 = 0.63 -> 1, -0.4/0.4786 = -0.84 -> -1
    assert t.packed[0].item() == (2 << 6) | (1 << 4) | (2 << 2) | 0
    back = I.dequantize_ternary(t)
    assert back.shape == w.shape
    assert torch.allclose(back, q.float().view(1, 7) * gamma)


def test_pack_2bit_round_trip_random():
    torch.manual_seed(0)
    q = torch.randint(-1, 2, (1001,), dtype=torch.int8)
    assert torch.equal(I.unpack_2bit(I.pack_2bit(q), 1001), q)


def test_activation_quant_per_token():
    x = torch.tensor([[1.0, -2.0, 0.5], [100.0, 0.0, -50.0]])
    q, s = I.quantize_activations_8bit(x)
    assert s.shape == (2, 1)
    assert q.tolist() == [[64, -127, 32], [127, 0, -64]]  # 1 / (2/127) = 63.5 -> 64 (half to even)
    assert (I.dequantize_activations_8bit(q, s) - x).abs().max() <= s.max() / 2 + 1e-6


def test_bits_per_param_int():
    assert I.bits_per_param_int(8, "channel", n=576 * 1536, groups=1536) == pytest.approx(8 + 32 / 576)
    assert I.bits_per_param_int(8, "block", n=6400, groups=100, asymmetric=True) == pytest.approx(9.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_decode_ternary_table_matches_unpack(dtype):
    torch.manual_seed(0)
    w = torch.randn(13, 7)  # 91 weights: a partial last byte
    t = I.quantize_ternary(w)
    slow = (I.unpack_2bit(t.packed, 91).float() * t.gamma).view(13, 7).to(dtype)
    assert torch.equal(I.dequantize_ternary(t, dtype), slow)
