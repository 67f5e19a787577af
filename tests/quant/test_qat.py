"""FakeQuant / BitLinear straight-through estimators, QAT prepare/convert, BitNet, int8/ternary QuantLinear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tunelab.quant import integer
from tunelab.quant.nn import BitLinear, FakeQuant, FakeQuantLinear, QuantLinear, fake_quantize_weight
from tunelab.quant.qat import LambdaWarmup, convert_qat, prepare_qat, set_lambda, to_bitnet


def test_fake_quant_value_is_quantized_gradient_is_identity():
    torch.manual_seed(0)
    w = torch.randn(8, 64, requires_grad=True)
    fq = FakeQuant("int4")
    y = fq(w)
    torch.testing.assert_close(y, fake_quantize_weight(w, "int4"))
    assert y.unique().numel() <= 8 * 15  # at most 15 levels per block
    (y * torch.arange(64.0)).sum().backward()
    torch.testing.assert_close(w.grad, torch.arange(64.0).expand(8, 64))  # STE: d/dw = identity


def test_fake_quant_lambda_zero_is_identity():
    w = torch.randn(4, 64)
    assert torch.equal(FakeQuant("ternary", lam=0.0)(w), w)


def test_bitlinear_forward_is_ternary_times_8bit_activations():
    torch.manual_seed(0)
    lin = nn.Linear(32, 16)
    bl = BitLinear(lin)
    x = torch.randn(3, 32, requires_grad=True)
    y = bl(x)
    gamma = lin.weight.abs().mean()
    wq = torch.clamp(torch.round(lin.weight / gamma), -1, 1) * gamma
    q, s = integer.quantize_activations_8bit(x)
    torch.testing.assert_close(y, F.linear(q.float() * s, wq, lin.bias))
    y.sum().backward()
    assert lin.weight.grad is not None and x.grad is not None
    torch.testing.assert_close(x.grad, torch.ones(3, 16) @ wq.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", ["int8", "ternary"])
def test_quant_linear_int8_and_ternary(fmt):
    torch.manual_seed(0)
    lin = nn.Linear(96, 40)
    q = QuantLinear.from_linear(lin, fmt=fmt)
    assert not q.double_quant
    torch.testing.assert_close(q.dequantize_weight(), fake_quantize_weight(lin.weight.detach(), fmt))
    x = torch.randn(5, 96)
    torch.testing.assert_close(q(x), F.linear(x, q.dequantize_weight(), lin.bias))
    expect_bytes = {"int8": 96 * 40 + 40 * 4, "ternary": 96 * 40 // 4 + 4}[fmt]
    assert q.nbytes() == expect_bytes
    fresh = QuantLinear(96, 40, fmt=fmt)
    fresh.load_state_dict(q.state_dict())
    assert torch.equal(fresh.dequantize_weight(), q.dequantize_weight())


def test_int8_clip_from_calibration():
    from tunelab.quant.calibrate import mse_clip

    torch.manual_seed(0)
    w = torch.randn(8, 256)
    half = w.abs().amax(1) / 2
    clipped = QuantLinear.from_weight(w, fmt="int8", clip=half)
    torch.testing.assert_close(clipped.dequantize_weight().abs().amax(1), half)  # clamped at the clip
    # at 8 bits the MSE-optimal clip of Gaussian rows is close to max|w| and never worse than it
    clip = mse_clip(w, bits=8, per_channel=True)
    assert (clip <= w.abs().amax(1)).all() and (clip > 0.5 * w.abs().amax(1)).all()
    err = lambda q: (q.dequantize_weight() - w).pow(2).mean()  # noqa: E731
    assert err(QuantLinear.from_weight(w, fmt="int8", clip=clip)) <= err(QuantLinear.from_weight(w, fmt="int8"))


def _tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("fmt", ["int8", "int4", "ternary"])
def test_prepare_then_convert_qat_keeps_outputs(tiny_model_dir, fmt):
    model = _tiny(tiny_model_dir)
    prepare_qat(model, fmt)
    assert isinstance(model.lm_head, nn.Linear)
    assert any(isinstance(m, FakeQuantLinear) for m in model.modules())
    ids = torch.tensor([[3, 9, 27, 81, 200, 11]])
    with torch.no_grad():
        before = model(ids).logits
    convert_qat(model)
    assert not any(isinstance(m, FakeQuantLinear) for m in model.modules())
    assert any(isinstance(m, QuantLinear) and m.fmt == fmt for m in model.modules())
    with torch.no_grad():
        after = model(ids).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def _windows(rows: torch.Tensor) -> list:
    """[n, seq] token ids -> pretraining blocks (every token a target)."""
    from tunelab.data.tokenize import TokenizedExample

    return [TokenizedExample(r.tolist(), r.tolist()) for r in rows]


def _finetune(model, blocks, steps: int, lr: float, before_step=None) -> list[float]:
    """`steps` AdamW steps of causal-LM loss through the training engine, batches of 2 blocks;
    returns the loss per step."""
    from tunelab.config import TrainConfig
    from tunelab.train.engine import train_loop

    cfg = TrainConfig(lr=lr, max_steps=steps, batch_size=2, warmup_ratio=0.0, scheduler="constant",
                      eval_every="never", precision="fp32", seed=0)  # fp32: the same on every CPU kind
    losses = []
    train_loop(model, blocks, [], cfg, pad_id=0, quiet=True, before_step=before_step,
               log=lambda rec: losses.append(rec["loss"]) if "loss" in rec else None)
    return losses


def test_bitnet_finetune_lowers_loss_and_converts(tiny_model_dir):
    from tunelab.eval.quantization import held_out_perplexity

    model = _tiny(tiny_model_dir)
    to_bitnet(model)
    n_bit = sum(isinstance(m, BitLinear) for m in model.modules())
    assert n_bit == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    torch.manual_seed(0)
    blocks = _windows(torch.randint(0, model.config.vocab_size, (4, 16)))
    ppl0 = held_out_perplexity(model, blocks, batch_size=2)
    losses = _finetune(model, blocks, steps=6, lr=3e-3)
    assert len(losses) == 6
    assert losses[-1] < losses[0]
    ppl1 = held_out_perplexity(model, blocks, batch_size=2)
    assert ppl1 < ppl0
    ids = torch.tensor([blocks[0].input_ids, blocks[1].input_ids])
    with torch.no_grad():
        ref = model(ids).logits
    convert_qat(model)
    assert sum(isinstance(m, QuantLinear) and m.act_quant for m in model.modules()) == n_bit
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref, rtol=1e-4, atol=1e-4)


def test_lambda_warms_up_before_each_engine_step(tiny_model_dir):
    model = to_bitnet(_tiny(tiny_model_dir))
    seen = []
    warmup = LambdaWarmup(4)

    def before_step(m):
        warmup(m)
        seen.append(next(x.lam for x in m.modules() if isinstance(x, BitLinear)))

    torch.manual_seed(0)
    _finetune(model, _windows(torch.randint(0, model.config.vocab_size, (4, 16))), steps=6, lr=1e-3,
              before_step=before_step)
    assert seen == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert all(m.lam == 1.0 for m in model.modules() if isinstance(m, BitLinear))


def test_set_lambda(tiny_model_dir):
    model = to_bitnet(_tiny(tiny_model_dir))
    set_lambda(model, 0.25)
    assert all(m.lam == 0.25 for m in model.modules() if isinstance(m, BitLinear))


def test_unknown_qat_format(tiny_model_dir):
    with pytest.raises(ValueError):
        prepare_qat(nn.Sequential(nn.Linear(2, 2)), "int3")
