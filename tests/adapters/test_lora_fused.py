"""adapters/fused.py: the folded LoRA layers give peft's outputs and gradients, and step aside
whenever the fold does not apply (dropout, merged, disabled adapters, autocast)."""

import pytest
import torch
from torch import nn

from tunelab.adapters.fused import FUSED_LAYERS, _plain_adapter
from tunelab.ops.lora_linear import lora_linear


def _peft_reference(x, w, bias, a, b, s):
    out = nn.functional.linear(x, w, bias)
    return out + nn.functional.linear(nn.functional.linear(x, a), b) * s


@pytest.mark.parametrize("shape,bias,x_grad", [((3, 5, 24), False, True), ((7, 24), True, True),
                                                ((2, 4, 24), False, False)])
def test_lora_linear_matches_the_unfused_sum_and_its_gradients(shape, bias, x_grad):
    torch.manual_seed(0)
    f64 = torch.float64  # exact arithmetic up to rounding, so the comparison is tight
    w, a, b = torch.randn(40, 24, dtype=f64), torch.randn(4, 24, dtype=f64), torch.randn(40, 4, dtype=f64)
    bb = torch.randn(40, dtype=f64) if bias else None
    x = torch.randn(*shape, dtype=f64)
    dy = torch.randn(*shape[:-1], 40, dtype=f64)
    results = []
    for f in (_peft_reference, lora_linear):
        xi = x.clone().requires_grad_(x_grad)
        ai, bi = a.clone().requires_grad_(), b.clone().requires_grad_()
        y = f(xi, w, bb, ai, bi, 2.5)
        y.backward(dy)
        results.append((y.detach(), xi.grad, ai.grad, bi.grad))
    (y0, gx0, ga0, gb0), (y1, gx1, ga1, gb1) = results
    assert y1.shape == y0.shape
    for got, want in ((y1, y0), (ga1, ga0), (gb1, gb0)) + (((gx1, gx0),) if x_grad else ()):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    if x_grad:
        assert gx1.shape == x.shape
    else:
        assert gx1 is None


def _grads_after_step(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return float(loss.detach()), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("quant", [False, True], ids=["linear", "nf4"])
def test_a_model_gives_peft_loss_and_gradients(tiny_lora, monkeypatch, quant):
    """Same model, same adapter weights: once through the layers' own forward (peft's, or the
    QLoRA layer's), once through ours."""
    model = tiny_lora(quant=quant)
    ids = torch.randint(0, model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    calls = []
    import tunelab.adapters.fused as lf
    import tunelab.ops.lora_linear as ll

    orig = ll._LoraLinear.apply
    monkeypatch.setattr(ll._LoraLinear, "apply", lambda *a: calls.append(1) or orig(*a))
    fused_loss, fused = _grads_after_step(model, ids)
    n_layers = sum(1 for m in model.modules() if hasattr(m, "lora_A"))
    assert len(calls) == n_layers > 0  # every LoRA layer took the folded path
    monkeypatch.setattr(lf, "_plain_adapter", lambda layer, x: None)  # back to the parent layers' forward
    peft_loss, ref = _grads_after_step(model, ids)
    assert len(calls) == n_layers  # the reference did not fold
    assert fused_loss == pytest.approx(peft_loss, rel=1e-6)
    assert fused.keys() == ref.keys() and fused
    for k in ref:
        torch.testing.assert_close(fused[k], ref[k], rtol=1e-4, atol=1e-6)


def test_steps_aside_where_it_does_not_apply(tiny_lora):
    model = tiny_lora()
    layer = next(m for m in model.modules() if hasattr(m, "lora_A"))
    x = torch.randn(2, 3, layer.in_features)
    assert _plain_adapter(layer, x) == "default"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _plain_adapter(layer, x) is None  # autocast: peft's forward casts as it needs
    assert _plain_adapter(layer, x.double()) is None
    with model.disable_adapter():
        assert _plain_adapter(layer, x) is None
    dropped = tiny_lora(dropout=0.1)
    layer = next(m for m in dropped.modules() if hasattr(m, "lora_A"))
    assert _plain_adapter(layer, x) is None  # dropout: peft's forward


def test_merged_model_ignores_the_adapter_path_and_keeps_the_function(tiny_lora):
    model = tiny_lora()
    model.eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        merged = model.merge_and_unload()
        after = merged(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("quant", [False, True], ids=["linear", "nf4"])
def test_fuse_counts_the_routed_layers(tiny_lora, quant):
    model = tiny_lora(quant=quant)
    n = sum(1 for m in model.modules() if hasattr(m, "lora_A"))
    assert sum(1 for m in model.modules() if isinstance(m, FUSED_LAYERS)) == n > 0


def test_saved_adapter_is_plain_peft(tiny_lora, tiny_model_dir, tmp_path):
    """Same keys and adapter_config.json as a plain peft adapter; plain PeftModel.from_pretrained
    loads it (peft's own layers) and computes what the folded layers computed."""
    import json

    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = tiny_lora()
    model.eval()
    model.save_pretrained(tmp_path / "fused")
    cfg = json.loads((tmp_path / "fused" / "adapter_config.json").read_text())
    plain = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(**{k: v for k, v in cfg.items() if k in LoraConfig.__dataclass_fields__}))
    plain.save_pretrained(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "adapter_config.json").read_text()) == cfg
    saved = load_file(str(tmp_path / "fused" / "adapter_model.safetensors"))
    assert saved.keys() == load_file(str(tmp_path / "plain" / "adapter_model.safetensors")).keys()
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "fused")
    assert not any(isinstance(m, FUSED_LAYERS) for m in loaded.modules())
    ids = torch.randint(0, model.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-4, atol=1e-5)


def test_other_bases_fall_through_to_peft_dispatch():
    """Only an exact nn.Linear (and QuantLinear) gets our layer: an nn.Linear subclass such as
    bitsandbytes' Linear4bit keeps peft's own layer for it."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.layer import Linear as PeftLinear

    from tunelab.adapters.fused import FusedLoraLinear, register_lora_layers

    class SubLinear(nn.Linear):
        pass

    net = nn.Sequential(nn.Linear(8, 8), SubLinear(8, 8))
    cfg = LoraConfig(r=2, target_modules=["0", "1"])
    register_lora_layers(cfg)
    net = get_peft_model(net, cfg)
    assert type(net.base_model.model[0]) is FusedLoraLinear
    assert type(net.base_model.model[1]) is PeftLinear
    bnb = pytest.importorskip("bitsandbytes")

    class Net(nn.Module):
        is_loaded_in_4bit = True  # what transformers sets on a 4-bit model, and peft's dispatch reads

        def __init__(self):
            super().__init__()
            self.proj = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4")

    cfg = LoraConfig(r=2, target_modules=["proj"])
    register_lora_layers(cfg)
    layer = get_peft_model(Net(), cfg).base_model.model.proj
    assert type(layer).__module__ + "." + type(layer).__name__ == "peft.tuners.lora.bnb.Linear4bit"
