"""The streamed quantized load (tunelab.quant.stream_load) on a synthetic ~82M-parameter checkpoint:
its peak RSS, bit-for-bit parity with quantize_model on a normal load, and a training step on it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tunelab.models.synthetic import write_synthetic_llama
from tunelab.quant import codecs
from tunelab.quant.nn import QuantLinear, quantize_model
from tunelab.quant.stream_load import quantize_4bit_chunked, stream_quantized


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """The "100m" preset (81.8M params: 12 x hidden 768, vocab 4,096), bf16, in 3 shards of <= 64 MiB."""
    return write_synthetic_llama(tmp_path_factory.mktemp("synth") / "m100", "100m", max_shard_bytes=64 * 1024**2)


@pytest.mark.parametrize("n", [64 * 5 + 7, 64 * 8, 64 * 3 + 2])
@pytest.mark.parametrize("dq", [False, True])
def test_chunked_quantization_is_quantize_4bit(n, dq):
    w = torch.randn(n, 3).to(torch.bfloat16)  # n*3 values: odd counts and partial last blocks included
    want = codecs.quantize_4bit(w, "nf4", 64, dq)
    for workers in (1, 2):
        got = quantize_4bit_chunked(w, "nf4", 64, dq, chunk_weights=128, workers=workers)
        assert torch.equal(got.packed, want.packed) and torch.equal(got.absmax, want.absmax)
        if dq:
            assert torch.equal(got.absmax_scale, want.absmax_scale) and torch.equal(got.absmax_offset, want.absmax_offset)


PROBE = """
import json, sys
from tunelab.quant import stream_load
from tunelab.runtime.allocator import reset_peak_rss, status_mb
path = sys.argv[1]
stream_load.warm_up(path)
before = status_mb("VmRSS")
assert reset_peak_rss()
model = stream_load.stream_quantized(path, int8_rows=sys.argv[2] == "int8")
print(json.dumps({"peak": (status_mb("VmHWM") - before) * 2**20, "model": stream_load.model_bytes(model),
                  "largest": stream_load.largest_tensor_bytes(path)}))
"""


@pytest.mark.parametrize("embed", ["none", "int8"])
def test_streamed_load_peak_rss_is_under_the_bound(ckpt, embed):
    """VmHWM above the RSS before the load <= 1.15 x the resulting model's bytes + the largest tensor
    (embeddings and head in fp32, or as int8 rows quantized from the checkpoint's view)."""
    out = subprocess.run([sys.executable, "-c", PROBE, str(ckpt), embed], capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    # NF4+DQ block Linears (39.0 MB), norms, embeddings and head: fp32 2 x 12.6 MB, int8 rows 2 x 3.2 MB
    want = (0.7, 0.82) if embed == "none" else (0.5, 0.6)
    assert want[0] * 81.8e6 < r["model"] < want[1] * 81.8e6, r
    assert r["peak"] <= 1.15 * r["model"] + r["largest"], r
    assert r["peak"] >= r["model"] * 0.9, r  # it did load into this process


def test_streamed_model_equals_quantize_model_of_a_normal_load(ckpt):
    from transformers import AutoModelForCausalLM

    streamed = stream_quantized(ckpt)
    normal = quantize_model(AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32))
    a, b = streamed.state_dict(), normal.state_dict()
    assert set(a) == set(b)
    assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    assert sum(isinstance(m, QuantLinear) for m in streamed.modules()) == 12 * 7
    ids = torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(streamed(ids).logits, normal(ids).logits)


def test_one_training_step_changes_the_adapter(ckpt):
    from tunelab.adapters.lora import apply_lora
    from tunelab.adapters.qlora import freeze_quantized_base
    from tunelab.config import MethodConfig
    from tunelab.losses import reply_loss_sum

    model = freeze_quantized_base(stream_quantized(ckpt))
    model = apply_lora(model, MethodConfig(name="qlora", r=4, layers=2))
    lora_b = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n}
    assert lora_b and all(not torch.any(v) for v in lora_b.values())  # B starts at zero
    ids = torch.randint(0, 500, (1, 16), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    loss, n = reply_loss_sum(model, ids, torch.ones_like(ids), ids.clone())
    (loss / n).backward()
    opt.step()
    after = dict(model.named_parameters())
    assert all(torch.any(after[k] != v) for k, v in lora_b.items())
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def test_load_base_streams_the_cpu_qlora_base(tiny_model_dir):
    """method qlora on the tunelab backend, CPU: load_base returns the base already 4-bit, equal to
    quantize_base of the whole load, and quantize_for_training freezes it without quantizing again."""
    from tunelab.adapters.qlora import quantize_base
    from tunelab.config import from_dict
    from tunelab.models.load import load_causal_lm
    from tunelab.train.recipes._common import load_base, quantize_for_training

    cfg = from_dict({"model": {"name": str(tiny_model_dir), "device": "cpu"}, "data": {"train": "unused.jsonl"},
                     "method": {"name": "qlora", "quant_backend": "tunelab"}})
    base = load_base(cfg)
    assert base.quantized and base.backend == "tunelab"
    assert sum(isinstance(m, QuantLinear) for m in base.model.modules()) == 14
    assert quantize_for_training(base, cfg, None) is True
    assert not any(p.requires_grad for p in base.model.parameters())
    whole = quantize_base(load_causal_lm(str(tiny_model_dir), dtype="auto", device="cpu")[0])
    a, b = base.model.state_dict(), whole.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    lora = from_dict({"model": {"name": str(tiny_model_dir), "device": "cpu"}, "data": {"train": "unused.jsonl"},
                      "method": {"name": "lora"}})
    plain = load_base(lora)
    assert not plain.quantized and not any(isinstance(m, QuantLinear) for m in plain.model.modules())


def test_a_checkpoint_with_other_names_is_refused_before_reading_and_loaded_whole(tiny_model_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from tunelab.quant.stream_load import CheckpointMismatch, load_quantized_causal_lm

    bad = tmp_path / "renamed"
    shutil.copytree(tiny_model_dir, bad)
    tensors = load_file(str(bad / "model.safetensors"))
    tensors = {k.replace("model.layers.", "transformer.h."): v for k, v in tensors.items()}
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatch, match="missing"):
        stream_quantized(bad)
    assert load_quantized_causal_lm(str(bad)) is None  # load_base then loads it whole
