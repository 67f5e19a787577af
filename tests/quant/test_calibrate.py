"""Calibration: min-max, percentile and MSE clipping; activations via hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tunelab.quant import calibrate as C
from tunelab.quant import integer as I


def _with_outlier(n=10000, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n)
    x[0] = 50.0  # one outlier stretches the min-max scale
    return x


def _mse(x, c, bits):
    return (I.dequantize_int(I.quantize_symmetric(x, bits=bits, absmax=c)) - x).pow(2).mean().item()


def test_minmax_is_absmax():
    x = torch.tensor([[-3.0, 1.0], [0.5, 2.0]])
    assert C.clip_value(x, "minmax").item() == 3.0
    assert C.clip_value(x, "minmax", per_channel=True).tolist() == [3.0, 2.0]


def test_percentile_ignores_the_outlier():
    x = _with_outlier()
    c = C.clip_value(x, "percentile", pct=99.9).item()
    assert 3.0 < c < 4.5  # 99.9th percentile of |N(0,1)| is 3.29
    assert c == pytest.approx(x.abs().sort().values[9989].item())


@pytest.mark.parametrize("bits", [4, 8])
def test_mse_clip_beats_minmax_and_percentile_with_outlier(bits):
    x = _with_outlier()
    c_mse = C.clip_value(x, "mse", bits=bits)
    assert c_mse < 50.0
    assert _mse(x, c_mse, bits) < _mse(x, C.clip_value(x, "minmax"), bits)
    assert _mse(x, c_mse, bits) <= _mse(x, C.clip_value(x, "percentile"), bits) * 1.01


def test_mse_clip_per_channel_shape_and_no_clip_on_uniform():
    torch.manual_seed(0)
    x = torch.rand(4, 256) * 2 - 1  # uniform data: clipping barely helps at 8 bits
    c = C.mse_clip(x, bits=8, per_channel=True)
    assert c.shape == (4,)
    assert (c > 0.9 * x.abs().amax(1)).all()


def test_unknown_method():
    with pytest.raises(ValueError):
        C.clip_value(torch.randn(10), "entropy")


def test_collect_activations_with_hooks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    batches = [torch.randn(5, 8) for _ in range(3)]
    obs = C.collect_activations(model, batches)
    assert set(obs) == {"0", "2"}
    allx = torch.cat(batches)
    assert obs["0"].lo == allx.min().item() and obs["0"].hi == allx.max().item()
    assert obs["0"].count == allx.numel()
    assert obs["2"].lo >= 0.0  # after ReLU
    assert not model[0]._forward_pre_hooks  # hooks removed
    clips = C.calibrate_activations(model, batches, method="minmax")
    assert clips["0"] == pytest.approx(allx.abs().max().item())


def test_collect_activations_on_tiny_llama(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batches = [{"input_ids": torch.tensor([[1, 2, 3, 4, 5, 6]])}]
    clips = C.calibrate_activations(model, batches, method="percentile")
    assert "model.layers.0.self_attn.q_proj" in clips and "lm_head" in clips
    assert all(v > 0 for v in clips.values())
