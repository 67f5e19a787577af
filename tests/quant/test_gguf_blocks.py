"""GGUF block decoders (quant/gguf_blocks.py, quant/gguf_kquants.py): bit for bit gguf.quants.dequantize
on Q4_0, Q4_1, Q8_0, Q5_0 and Q5_1 for odd shapes and on Q4_K / Q5_K / Q6_K super-blocks, bytes kept as the file's, rows
that reorder without touching a code, and the q/k row order that undoes convert_hf_to_gguf's permutation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from gguf import quants

from tunelab.quant.gguf_blocks import BLOCK_BYTES, decode, dequantize_raw, split_blocks
from tunelab.quant.gguf_kquants import RAW_FORMATS

TYPES = {"q4_0": T.Q4_0, "q4_1": T.Q4_1, "q8_0": T.Q8_0, "q5_0": T.Q5_0, "q5_1": T.Q5_1}  # gguf-py quantizes these
SIZES = {**BLOCK_BYTES, **{k: f.block_bytes for k, f in RAW_FORMATS.items()}}


def _weights(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 5, (rows, 1))).astype(np.float32)
    w[0, :32] = 0.25  # a constant block (Q4_1: d = 0) and an all-zero one
    if cols >= 64:
        w[-1, 32:64] = 0.0
    return w


@pytest.mark.parametrize("fmt", list(TYPES))
@pytest.mark.parametrize("shape", [(1, 32), (7, 96), (33, 64), (3, 608)])
def test_decode_is_bit_exact_with_gguf(fmt, shape):
    raw = quants.quantize(_weights(*shape, seed=shape[0]), TYPES[fmt])
    ref = quants.dequantize(raw, TYPES[fmt])
    got = dequantize_raw(torch.from_numpy(raw), fmt)
    assert got.dtype == torch.float32 and tuple(got.shape) == shape
    assert np.array_equal(got.numpy().view(np.uint32), ref.view(np.uint32))  # same bits, -0.0 included


@pytest.mark.parametrize("fmt", list(TYPES))
def test_blocks_keep_the_file_bytes(fmt):
    raw = quants.quantize(_weights(5, 160, seed=3), TYPES[fmt])
    b = split_blocks(torch.from_numpy(raw), fmt)
    assert b.nbytes() == raw.nbytes == 5 * (160 // 32) * SIZES[fmt]
    assert b.shape == (5, 160)


@pytest.mark.parametrize("fmt", list(TYPES))
def test_rows_reorder_without_recoding(fmt):
    raw = torch.from_numpy(quants.quantize(_weights(8, 64, seed=4), TYPES[fmt]))
    order = torch.tensor([3, 1, 7, 0, 2, 6, 5, 4])
    assert torch.equal(decode(split_blocks(raw, fmt).select_rows(order)), dequantize_raw(raw, fmt)[order])


def test_unknown_format_and_partial_rows_are_refused():
    with pytest.raises(ValueError, match="iq2_xxs"):
        split_blocks(torch.zeros(2, 66, dtype=torch.uint8), "iq2_xxs")
    with pytest.raises(ValueError, match="whole blocks"):
        split_blocks(torch.zeros(2, 19, dtype=torch.uint8), "q4_0")


def test_unpermute_rows_inverts_the_export_permutation():
    from tunelab.export.gguf_tensors import permute_qk
    from tunelab.quant.gguf_load import unpermute_rows

    for n_head, rows in ((4, 64), (3, 192), (2, 8)):
        w = torch.arange(rows * 3, dtype=torch.float32).reshape(rows, 3)
        stored = torch.from_numpy(permute_qk(w.numpy(), n_head))
        assert torch.equal(stored[unpermute_rows(rows, n_head)], w)


def _k_blocks(fmt: str, rows: int, supers: int, seed: int) -> np.ndarray:
    """Random K-quant super-blocks (any bytes are a valid block) with finite fp16 scales."""
    rng = np.random.default_rng(seed)
    size = SIZES[fmt]
    b = rng.integers(0, 256, (rows * supers, size), dtype=np.uint8)
    scale = rng.uniform(1e-3, 0.1, (rows * supers, 2)).astype(np.float16).view(np.uint8)
    if fmt in ("q4_k", "q5_k"):
        b[:, 0:4] = scale.reshape(-1, 4)  # d, dmin
    else:
        b[:, 208:210] = scale[:, :2]  # d
    return b.reshape(rows, supers * size)


@pytest.mark.parametrize("fmt,qtype", [("q4_k", T.Q4_K), ("q5_k", T.Q5_K), ("q6_k", T.Q6_K)])
@pytest.mark.parametrize("rows,supers", [(1, 1), (5, 3)])
def test_k_quants_decode_bit_exact_with_gguf(fmt, qtype, rows, supers):
    raw = _k_blocks(fmt, rows, supers, seed=rows)
    ref = quants.dequantize(raw, qtype)
    b = split_blocks(torch.from_numpy(raw), fmt)
    got = decode(b)
    assert tuple(got.shape) == (rows, supers * 256) and b.nbytes() == raw.nbytes
    assert np.array_equal(got.numpy().view(np.uint32), ref.view(np.uint32))
    order = torch.arange(rows).flip(0)
    assert torch.equal(decode(b.select_rows(order)), got[order])
