"""infer/int4.py: weights already on a 4- or 8-bit grid (GGUF Q4_1, Q4_0, Q8_0 sources) are found,
stored as their exact codes, and multiplied by torch's int4 kernel to within the bf16 rounding of
the scales; weights off the grid are refused; the engine runs them, LoRA kept apart, and `auto`
picks them only where the CPU does bf16."""

from __future__ import annotations

import pytest
import torch

from tunelab.infer.int4 import GROUP, fit_grid, int4_kernel_available, pack_exact

pytestmark = pytest.mark.skipif(not int4_kernel_available(), reason="no CPU int4 kernel in this torch")


def _q4_1(out: int, n: int, seed: int = 0) -> torch.Tensor:
    """Q4_1-style: per group of 32, w = m + d k, k in 0..15 (both ends used, as Q4_1's encoder does)."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 16, (out, n // GROUP, GROUP), generator=g)
    k[..., 0], k[..., 1] = 0, 15
    d = torch.rand(out, n // GROUP, 1, generator=g) * 0.01 + 1e-3
    m = -8 * d + torch.randn(out, n // GROUP, 1, generator=g) * 0.002
    return (m + d * k).reshape(out, n), k.reshape(out, n)


def _q8_0(out: int, n: int, seed: int = 1) -> torch.Tensor:
    """Q8_0-style: per group, w = d q, q in -127..127, the largest |q| = 127."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-100, 101, (out, n // GROUP, GROUP), generator=g)
    q[..., 3] = 127
    d = torch.rand(out, n // GROUP, 1, generator=g) * 0.001 + 1e-4
    return (d * q).reshape(out, n)


def test_fit_grid_recovers_the_codes_and_refuses_what_is_off_the_grid():
    w, k = _q4_1(48, 128)
    codes, c, s = fit_grid(w, 16)
    assert torch.equal(codes, k.to(torch.int32))
    sym = torch.randint(0, 15, (16, 64)).float()  # Q4_0-style: d (k - 8), the ends not all used
    sym[:, ::GROUP] = 0  # -8 d in every group: the absmax is 8 d
    d = torch.rand(16, 2, 1) + 0.1
    fit = fit_grid((sym.view(16, 2, GROUP) - 8).mul(d).view(16, 64), 16)
    assert fit is not None and int(fit[0].max()) <= 15
    assert fit_grid(torch.randn(64, 128), 16) is None and fit_grid(torch.randn(64, 128), 256) is None
    assert fit_grid(w[:, :100], 16) is None  # not whole groups
    assert fit_grid(_q8_0(8, 64), 16) is None and fit_grid(_q8_0(8, 64), 256) is not None


@pytest.mark.parametrize("make, parts", [(lambda: _q4_1(96, 256)[0], 1), (lambda: _q8_0(96, 256), 2)])
def test_the_int4_product_equals_the_weights_to_bf16_scales(make, parts):
    w = make()
    packed = pack_exact(w)
    assert packed is not None and len(packed.parts) == parts
    assert packed.nbytes <= parts * w.numel() * (0.5 + 4 / GROUP)  # per part: 4 bits a weight, bf16 scale and zero a group
    x = torch.randn(3, w.shape[1]).bfloat16()
    y = packed.matmul(x).float()
    ref = x.float() @ w.t()
    # scale and zero are rounded to bf16 (2^-9 relative), the sum is bf16: a few parts in a thousand
    assert (y - ref).abs().max() <= 1e-2 * ref.abs().max()
    assert packed.matmul(x.view(1, 3, -1)).shape == (1, 3, w.shape[0])
    rows = torch.stack([x, x], 1)[:, 1]  # a strided view, as a batch's last hidden states are
    assert not rows.is_contiguous() and torch.equal(packed.matmul(rows), packed.matmul(x))


def test_many_rows_take_the_dense_copy_and_few_rows_the_codes():
    from tunelab.infer.int4 import DENSE_ROWS

    w = _q8_0(96, 256)
    codes_only, both = pack_exact(w), pack_exact(w, keep_dense=True)
    assert codes_only.dense is None and torch.equal(both.dense, w.to(torch.bfloat16))
    assert both.nbytes == codes_only.nbytes and both.dense_nbytes == 2 * w.numel()
    few = torch.randn(DENSE_ROWS // 2, w.shape[1]).bfloat16()  # an 8-bit grid: two parts, each row counts twice
    many = torch.randn(1, DENSE_ROWS // 2 + 1, w.shape[1]).bfloat16()  # rows are counted over every leading axis
    assert torch.equal(both.matmul(few), codes_only.matmul(few))  # the codes' own product, bit for bit
    got = both.matmul(many)
    assert got.shape == (1, DENSE_ROWS // 2 + 1, 96)
    assert torch.equal(got, torch.nn.functional.linear(many, w.to(torch.bfloat16)))
    ref = codes_only.matmul(many).float()
    assert (got.float() - ref).abs().max() <= 1e-2 * ref.abs().max()  # both within bf16 rounding of w


@pytest.fixture(scope="module")
def grid_model(tiny_model_dir):
    """The tiny Llama with every 2-D weight moved onto a Q4_1 grid (the head and embedding too)."""
    from transformers import AutoModelForCausalLM

    from tests.q4_grid import snap_to_q4_1

    return snap_to_q4_1(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval())


def test_the_engine_runs_grid_weights_as_int4_and_refuses_others(grid_model, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tunelab.infer.decode import DecodeEngine, Unsupported

    eng = DecodeEngine.from_model(grid_model, dtype=torch.bfloat16, weights="int4")
    assert all(getattr(b, n).int4 is not None for b in eng.w.blocks for n in ("qkv", "o", "gate_up", "down"))
    dense = DecodeEngine.from_model(grid_model, dtype=torch.float32)
    ids = torch.randint(5, 300, (20,), generator=torch.Generator().manual_seed(0)).tolist()
    a, b = eng.logits(ids).float(), dense.logits(ids)
    assert (a - b).abs().max() <= 0.05 * (b.max() - b.min())  # bf16 activations: within 5% of the range
    assert eng.generate([ids], 6)[0][:1] == dense.generate([ids], 6)[0][:1]
    two = eng.generate([ids, ids[:13]], 6)  # a batch: each row's last hidden state is a strided view
    assert two[0][:1] == eng.generate([ids], 6)[0][:1] and len(two[1]) == 6
    both = DecodeEngine.from_model(grid_model, dtype=torch.bfloat16, weights="int4", dense_batches=True)
    assert all(getattr(b, n).int4.dense is not None for b in both.w.blocks for n in ("qkv", "o", "gate_up", "down"))
    c = both.logits(ids).float()  # a 20-token prompt: dense bf16 products, same logits to bf16 rounding
    assert (c - b).abs().max() <= 0.05 * (b.max() - b.min()) and (c - a).abs().max() > 0
    assert both.generate([ids], 6)[0][:1] == eng.generate([ids], 6)[0][:1]
    random = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with pytest.raises(Unsupported, match="not on a 4- or 8-bit grid"):
        DecodeEngine.from_model(random, dtype=torch.bfloat16, weights="int4")
    with pytest.raises(ValueError, match="bf16"):
        DecodeEngine.from_model(grid_model, dtype=torch.float32, weights="int4")


def test_auto_picks_int4_where_the_cpu_does_bf16_and_int4_keeps_a_lora_apart(grid_model, monkeypatch):
    from tests.conftest import nudged_lora
    from tunelab.infer import engine_choice

    monkeypatch.setattr("tunelab.runtime.precision.cpu_has_bf16", lambda: True)
    eng, _ = engine_choice.build_engine(grid_model)
    assert eng.w.blocks[0].qkv.int4 is not None
    peft = nudged_lora(grid_model, seed=2).eval()
    eng, _ = engine_choice.build_engine(peft)
    assert eng.w.blocks[0].qkv.int4 is None and eng.w.dtype == torch.float32  # auto: a LoRA run merges in fp32
    eng, _ = engine_choice.build_engine(peft, weights="int4")
    assert eng.w.blocks[0].qkv.int4 is not None and eng.w.blocks[0].qkv.loras  # the base on its grid, A, B apart
    ids = list(range(5, 25))
    with torch.no_grad():
        ref = peft(torch.tensor([ids])).logits[0]
    got = eng.logits(ids).float()
    assert (got - ref).abs().max() <= 0.05 * (ref.max() - ref.min())
    monkeypatch.setattr("tunelab.runtime.precision.cpu_has_bf16", lambda: False)
    peft.unload()
    eng, _ = engine_choice.build_engine(grid_model)
    assert eng.w.blocks[0].qkv.int4 is None and eng.w.dtype == torch.float32  # no bf16 here: fp32, as before


def test_the_server_engine_takes_int4_where_it_fits_or_asked(grid_model, tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from tunelab.infer.decode import Unsupported
    from tunelab.infer.engine_choice import serving_engine

    monkeypatch.setattr("tunelab.runtime.precision.cpu_has_bf16", lambda: True)
    eng = serving_engine(grid_model)
    assert eng.w.blocks[0].o.int4 is not None and eng.w.blocks[0].o.int4.dense is not None  # room: the copy too
    params = sum(p.numel() for p in grid_model.parameters())
    # free memory under twice the bf16 copy (2 bytes a parameter): the codes alone
    monkeypatch.setattr("tunelab.memory.available.detect_memory", lambda device: (0, 0, 4 * params - 1))
    assert serving_engine(grid_model).w.blocks[0].o.int4.dense is None
    monkeypatch.undo()
    monkeypatch.setattr("tunelab.runtime.precision.cpu_has_bf16", lambda: True)
    assert serving_engine(grid_model, "fp32").w.dtype == torch.float32
    random = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert serving_engine(random).w.dtype == torch.float32  # auto: off the grid, the base's dtype
    with pytest.raises(Unsupported):
        serving_engine(random, "int4")
    monkeypatch.setattr("tunelab.runtime.precision.cpu_has_bf16", lambda: False)
    assert serving_engine(grid_model).w.blocks[0].o.int4 is None
