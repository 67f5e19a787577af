"""K-quant encoders (quant/kquant_encode.py): the bytes of ggml's reference quantizers (a scalar transliteration
of the C loop, tests/quant/kquant_reference.py) bit for bit; decoded by gguf-py and by our torch decoders to the
same bits; the error of each format within its bounds and below Q4_0's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from gguf import quants

from tests.quant.kquant_reference import encode_rows, nearest_int
from tunelab.quant.gguf_kquants import decode_raw
from tunelab.quant.kquant_encode import ENCODERS, encode
from tunelab.quant.kquant_encode import nearest_int as nearest_int_vec

QTYPES = {"q4_k": T.Q4_K, "q5_k": T.Q5_K, "q6_k": T.Q6_K}
SUB = {"q4_k": (32, 15), "q5_k": (32, 31), "q6_k": (16, 63)}  # sub-block length, code steps


def _tricky(seed: int) -> np.ndarray:
    """2 super-blocks: Gaussian with a zero sub-block, a constant run, one outlier and an all-positive sub-block;
    heavy-tailed (Student t, 2 degrees of freedom)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((2, 256)) * 0.02).astype(np.float32)
    x[0, :32], x[0, 40:56], x[0, 200], x[0, 224:] = 0.0, 0.5, -3.0, np.abs(x[0, 224:]) + 0.1
    x[1] = rng.standard_t(2, 256) * 0.01
    return x


@pytest.mark.parametrize("fmt", list(ENCODERS))
def test_bytes_equal_the_reference_loop(fmt):
    x = _tricky(seed=len(fmt))
    assert np.array_equal(encode_rows(x, fmt), ENCODERS[fmt][1](x))


def test_edge_blocks_equal_the_reference_loop():
    """All zero, constant, negative constant, and values on the rounding ties (integers, halves)."""
    x = np.stack([np.zeros(256), np.full(256, 0.3), np.full(256, -0.3),
                  np.tile(np.arange(-8, 8, 0.5), 8)]).astype(np.float32)
    for fmt, (_, fn) in ENCODERS.items():
        assert np.array_equal(encode_rows(x, fmt), fn(x)), fmt
    assert not ENCODERS["q6_k"][1](x[:1]).any()  # an all-zero super-block: 210 zero bytes, as the C's memset


def test_nearest_int_is_the_magic_number_rounding():
    v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999998, 7.5, -7.5, 1e6 + 0.5, 3.0], dtype=np.float32)
    assert nearest_int_vec(v).tolist() == [nearest_int(a) for a in v] == [0, 2, 2, 0, -2, 2, 8, -8, 1000000, 3]


@pytest.mark.parametrize("fmt", list(ENCODERS))
def test_gguf_py_and_our_decoder_read_the_same_weights(fmt):
    w = (np.random.default_rng(3).standard_normal((6, 512)) * 0.05).astype(np.float32)
    raw = encode(w, fmt)
    assert raw.shape == (6, 2 * ENCODERS[fmt][0]) and raw.dtype == np.uint8
    ref = quants.dequantize(raw, QTYPES[fmt])
    ours = decode_raw(torch.from_numpy(raw), fmt).numpy()
    assert ref.shape == ours.shape == w.shape
    assert np.array_equal(ref.view(np.uint32), ours.view(np.uint32))


@pytest.mark.parametrize("fmt", list(ENCODERS))
def test_error_within_the_format_bounds_and_below_q4_0(fmt):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((32, 1024)) * rng.uniform(0.001, 10, (32, 1))).astype(np.float32)  # row scales
    got = quants.dequantize(encode(w, fmt), QTYPES[fmt]).reshape(w.shape)
    sub, steps = SUB[fmt]
    xs, err = w.reshape(-1, sub), np.abs(got - w).reshape(-1, sub)
    step = (np.maximum(xs.max(1), 0) - np.minimum(xs.min(1), 0)) / steps  # the sub-block's code step
    assert (err.max(1) <= 1.25 * step).all()  # rounding (half a step) + the 6/8-bit sub-block scale's rounding
    rel = np.sqrt(((got - w) ** 2).mean() / (w ** 2).mean())
    q4_0 = quants.dequantize(quants.quantize(w, T.Q4_0), T.Q4_0)
    assert rel < {"q4_k": 0.08, "q5_k": 0.04, "q6_k": 0.02}[fmt]
    assert rel < np.sqrt(((q4_0 - w) ** 2).mean() / (w ** 2).mean())


def test_chunks_and_shapes():
    w = (np.random.default_rng(5).standard_normal((2, 3, 512)) * 0.1).astype(np.float32)
    whole = encode(w, "q4_k")
    assert whole.shape == (2, 3, 288)
    assert np.array_equal(encode(w, "q4_k", chunk_weights=256), whole)  # one row per chunk: same bytes
    with pytest.raises(ValueError, match="super-blocks of 256"):
        encode(np.zeros((2, 300), np.float32), "q5_k")
