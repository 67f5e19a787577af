"""QuantLinear: API the QLoRA path relies on, gradients to the input, autocast, state_dict."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tunelab.quant import codecs
from tunelab.quant.nn import QuantLinear, quantize_model


def _linear(i=128, o=96, bias=True, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(i, o, bias=bias)
    nn.init.normal_(lin.weight, std=0.05)
    return lin


@pytest.mark.parametrize("fmt", ["nf4", "fp4", "int4"])
@pytest.mark.parametrize("dq", [False, True])
def test_from_linear_matches_codec_and_approximates_weight(fmt, dq):
    lin = _linear()
    q = QuantLinear.from_linear(lin, fmt=fmt, double_quant=dq)
    assert (q.in_features, q.out_features, q.fmt) == (128, 96, fmt)
    ref = codecs.dequantize_4bit(codecs.quantize_4bit(lin.weight, fmt, 64, dq))
    assert torch.equal(q.dequantize_weight(), ref)
    rel = (q.dequantize_weight() - lin.weight).norm() / lin.weight.norm()
    assert rel < 0.15
    assert q.bias is not None and not q.bias.requires_grad and torch.equal(q.bias, lin.bias)
    assert not any(p.requires_grad for p in q.parameters())
    keys = set(q.state_dict())
    assert {"packed", "absmax", "bias"} <= keys
    assert ({"absmax_scale", "absmax_offset"} <= keys) == dq
    assert q.packed.dtype == torch.uint8 and q.packed.numel() == 128 * 96 // 2


def test_forward_equals_linear_with_dequantized_weight():
    lin = _linear()
    q = QuantLinear.from_linear(lin)
    x = torch.randn(3, 5, 128)
    torch.testing.assert_close(q(x), F.linear(x, q.dequantize_weight(), lin.bias))


def test_gradient_flows_to_input_not_weight():
    q = QuantLinear.from_linear(_linear())
    x = torch.randn(4, 128, requires_grad=True)
    q(x).pow(2).sum().backward()
    w = q.dequantize_weight()
    x2 = x.detach().clone().requires_grad_()
    F.linear(x2, w, q.bias).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    assert q.packed.grad is None and q.bias.grad is None


def test_eval_no_grad_forward_does_not_break_later_training():
    """bitsandbytes 0.50 (CPU) repacks Linear4bit on the first eval no-grad forward and LoRA then gets
    no gradient. QuantLinear has no such cache: gradients after an eval pass are unchanged."""
    torch.manual_seed(0)
    q = QuantLinear.from_linear(_linear())
    lora_a = nn.Linear(128, 4, bias=False)
    lora_b = nn.Linear(4, 96, bias=False)
    nn.init.normal_(lora_b.weight)

    def model(x):
        return q(x) + lora_b(lora_a(x))

    x = torch.randn(6, 128)
    packed_before = q.packed.clone()
    q.eval()
    with torch.no_grad():
        y_eval = model(x)
    assert torch.equal(q.packed, packed_before)  # no repacked layout
    q.train()
    xg = x.clone().requires_grad_()
    y = model(xg)
    torch.testing.assert_close(y, y_eval)
    y.sum().backward()
    assert xg.grad is not None and lora_a.weight.grad is not None and lora_b.weight.grad is not None
    expected = torch.ones(6, 96) @ (q.dequantize_weight() + lora_b.weight @ lora_a.weight)
    torch.testing.assert_close(xg.grad, expected)
    assert lora_a.weight.grad.abs().sum() > 0


def test_autocast_bf16_forward_and_backward():
    q = QuantLinear.from_linear(_linear())
    x = torch.randn(8, 128, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = q(x)
    assert y.dtype == torch.bfloat16
    ref = F.linear(x.detach(), q.dequantize_weight(), q.bias)
    assert (y.float() - ref).abs().max() < 0.05 * ref.abs().max()
    y.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad, torch.ones(8, 96) @ q.dequantize_weight(), atol=0.02, rtol=0.02)


def test_bf16_decode_within_three_roundings_of_fp32_decode():
    q = QuantLinear.from_linear(_linear(256, 128), "nf4", double_quant=True)
    exact = q.dequantize_weight()
    fast = q._decode(torch.bfloat16).float()
    nz = exact != 0
    assert ((fast - exact).abs()[nz] / exact.abs()[nz]).max() <= 3 * 2**-8


def test_compute_dtype_casts_input_and_back():
    q = QuantLinear.from_linear(_linear(), compute_dtype=torch.bfloat16)
    x = torch.randn(2, 128)
    y = q(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, F.linear(x, q.dequantize_weight(), q.bias), atol=0.05, rtol=0.05)


def test_state_dict_round_trip_bit_exact():
    q = QuantLinear.from_linear(_linear(bias=False), fmt="fp4", double_quant=True)
    fresh = QuantLinear(128, 96, bias=False, fmt="fp4", double_quant=True)
    fresh.load_state_dict(q.state_dict())
    assert torch.equal(fresh.dequantize_weight(), q.dequantize_weight())
    assert q.bias is None


def test_odd_sizes():
    lin = _linear(i=33, o=7)
    q = QuantLinear.from_linear(lin, double_quant=True)
    x = torch.randn(2, 33)
    torch.testing.assert_close(q(x), F.linear(x, q.dequantize_weight(), lin.bias))
    assert (q.dequantize_weight() - lin.weight).abs().max() < 0.05


def test_quantize_model_replaces_linears_except_skipped(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[1, 5, 9, 20, 7]])
    with torch.no_grad():
        ref = model(ids).logits
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    quantize_model(model, "nf4", skip=("lm_head",))
    assert isinstance(model.lm_head, nn.Linear)
    n_quant = sum(isinstance(m, QuantLinear) for m in model.modules())
    assert n_quant == n_linear - 1
    assert not any(isinstance(m, nn.Linear) and n != "lm_head" for n, m in model.named_modules())
    with torch.no_grad():
        out = model(ids).logits
    assert out.shape == ref.shape
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.9


def test_input_gradient_decodes_again_instead_of_keeping_the_weight():
    """With an input that needs a gradient, nothing is saved for backward (not the decoded weight,
    not x: dx = dy W' needs neither), and dx equals the gradient through F.linear with W'."""
    q = QuantLinear.from_linear(_linear(256, 128), "nf4", double_quant=True)
    x = torch.randn(5, 256, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        y = q(x)
    assert saved == []
    dy = torch.randn_like(y)
    y.backward(dy)
    ref_x = x.detach().clone().requires_grad_(True)
    F.linear(ref_x, q.dequantize_weight(), q.bias).backward(dy)
    torch.testing.assert_close(y, F.linear(x.detach(), q.dequantize_weight(), q.bias))
    torch.testing.assert_close(x.grad, ref_x.grad)
