"""GGUFBlockLinear and the GGUF-as-stored QLoRA base (quant/gguf_linear.py, quant/gguf_load.py).

The layer computes F.linear with the dequantized weight and passes gradients to its input and to
the LoRA adapter peft builds on it (adapters/fused.py's layer); a tiny GGUF built with our export
(Q4_0, Q8_0, and Q4_1 through the same writer) loads with its blocks kept and gives the logits of
transformers' own GGUF loader, which dequantizes every tensor; the kept blocks cost the file's bytes;
`method.quant_type` auto picks the blocks only where every block Linear is Q4_0/Q4_1/Q8_0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType as T
from gguf import quants
from torch import nn

from tunelab.errors import TunelabError
from tunelab.quant.gguf_blocks import dequantize_raw
from tunelab.quant.gguf_linear import GGUFBlockLinear

TYPES = {"q4_0": T.Q4_0, "q4_1": T.Q4_1, "q8_0": T.Q8_0}


def _layer(fmt: str, out_f: int = 24, in_f: int = 96, bias: bool = True, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g)
    raw = torch.from_numpy(quants.quantize(w.numpy(), TYPES[fmt]))
    b = torch.randn(out_f, generator=g) if bias else None
    return GGUFBlockLinear.from_raw(raw, fmt, b), dequantize_raw(raw, fmt), b, raw


@pytest.mark.parametrize("fmt", list(TYPES))
def test_forward_is_linear_with_the_dequantized_weight(fmt):
    layer, w, b, raw = _layer(fmt)
    x = torch.randn(2, 5, 96)
    assert torch.equal(layer(x), F.linear(x, w, b))
    assert torch.equal(layer.dequantize_weight(), w)
    assert layer.nbytes() == raw.numel()  # the GGUF tensor's bytes, nothing more
    nobias, w, _, _ = _layer(fmt, bias=False)
    xb = x.to(torch.bfloat16)
    assert torch.equal(nobias(xb), F.linear(xb, w.to(torch.bfloat16)))  # decoded in fp32, cast once


@pytest.mark.parametrize("fmt", ["q4_1", "q8_0"])
def test_input_gradient_decodes_again(fmt):
    layer, w, b, _ = _layer(fmt)
    x = torch.randn(3, 96, requires_grad=True)
    layer(x).pow(2).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    F.linear(x2, w, b).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-5)


class _Net(nn.Module):
    def __init__(self, proj: nn.Module):
        super().__init__()
        self.proj = proj

    def forward(self, x):
        return self.proj(x)


def _lora(model: nn.Module):
    from peft import LoraConfig, get_peft_model

    from tunelab.adapters.fused import register_lora_layers

    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["proj"], lora_dropout=0.0)
    register_lora_layers(cfg)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        torch.manual_seed(1)
        peft_model.base_model.model.proj.lora_B["default"].weight.normal_(0, 0.05)
    return peft_model


def test_lora_on_blocks_matches_lora_on_the_dequantized_linear():
    from tunelab.adapters.fused import FusedLoraQuantLinear

    layer, w, b, _ = _layer("q4_1")
    dense = nn.Linear(96, 24)
    with torch.no_grad():
        dense.weight.copy_(w)
        dense.bias.copy_(b)
    torch.manual_seed(0)
    ours = _lora(_Net(layer))
    torch.manual_seed(0)
    ref = _lora(_Net(dense))
    assert type(ours.base_model.model.proj) is FusedLoraQuantLinear
    x = torch.randn(4, 96)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    ya, yb = ours(xs[0]), ref(xs[1])
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    ya.pow(2).sum().backward()
    yb.pow(2).sum().backward()
    pa, pb = ours.base_model.model.proj, ref.base_model.model.proj
    for name in ("lora_A", "lora_B"):
        ga, gb = getattr(pa, name)["default"].weight.grad, getattr(pb, name)["default"].weight.grad
        assert ga is not None and ga.abs().sum() > 0
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-4, atol=1e-5)


# ---- a tiny GGUF, loaded with its blocks kept ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir, tmp_path_factory):
    """tiny_gguf(fmt) -> path of the tiny Llama exported as GGUF with its block Linears in `fmt`
    (q4_0, q8_0 or f16 through `write_gguf`; q4_1 through the same writer with its type rule set to Q4_1)."""
    from tunelab.export import gguf_tensors
    from tunelab.export.gguf import write_gguf

    out, made = tmp_path_factory.mktemp("gguf-blocks"), {}

    def make(fmt: str):
        if fmt not in made:
            path = out / f"tiny-{fmt}.gguf"
            if fmt == "q4_1":
                original = gguf_tensors.choose_type

                def q4_1(name, shape, quant, tied):
                    qtype, fell_back = original(name, shape, quant, tied)
                    return (T.Q4_1 if qtype == T.Q4_0 else qtype), fell_back

                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr(gguf_tensors, "choose_type", q4_1)
                    write_gguf(tiny_model_dir, path, "q4_0")
            else:
                write_gguf(tiny_model_dir, path, fmt)
            made[fmt] = path
        return made[fmt]

    return make


def _cfg(name: str, **method):
    from tunelab.config import from_dict

    return from_dict({"model": {"name": str(name)}, "data": {"train": "x.jsonl"},
                      "method": {"name": "qlora", "r": 4, "layers": "all", **method}})


@pytest.mark.parametrize("fmt", ["q4_0", "q4_1", "q8_0"])
def test_blocks_kept_give_transformers_gguf_logits(tiny_gguf, fmt):
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunelab.quant.gguf_file import read_gguf
    from tunelab.quant.gguf_load import base_nbytes, build_model

    path = tiny_gguf(fmt)
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    model = build_model(path, AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name))
    kept = [m for m in model.modules() if isinstance(m, GGUFBlockLinear)]
    assert len(kept) == 2 * 7 and {m.fmt for m in kept} == {fmt}
    ids = torch.randint(0, ref.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, rtol=1e-5, atol=1e-5)
    f = read_gguf(path)
    file_bytes = sum(t.n_bytes for t in f.tensors if t.tensor_type.name == fmt.upper() and t.name.startswith("blk."))
    assert base_nbytes(model)["blocks"] == file_bytes


def test_reader_matches_gguf_reader(tiny_gguf):
    import gguf

    from tunelab.quant.gguf_file import read_gguf

    path = tiny_gguf("q4_0")
    ours, ref = read_gguf(path), gguf.GGUFReader(str(path))
    assert ours.get("general.architecture") == "llama"
    assert ours.get("llama.block_count") == ref.fields["llama.block_count"].contents()
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for a, b in zip(ours.tensors, ref.tensors):
        assert a.tensor_type == b.tensor_type and a.n_bytes == b.n_bytes
        assert np.array_equal(np.asarray(a.data).reshape(-1), np.asarray(b.data).reshape(-1))


def test_quant_type_auto_picks_blocks_only_where_they_apply(tiny_gguf, tiny_model_dir):
    from tunelab.methods import resolve
    from tunelab.quant.gguf_load import load_gguf_qlora_base

    cfg = _cfg(tiny_gguf("f16"))  # F16 Linears: not blocks -> auto means nf4 (settled by resolve, cfg unchanged)
    assert load_gguf_qlora_base(cfg) is None and resolve(cfg).method.quant_type == "nf4"
    assert cfg.method.quant_type == "auto"
    with pytest.raises(TunelabError, match="F16"):
        load_gguf_qlora_base(_cfg(tiny_gguf("f16"), quant_type="gguf"))
    with pytest.raises(TunelabError, match="not a GGUF"):
        load_gguf_qlora_base(_cfg(tiny_model_dir, quant_type="gguf"))
    with pytest.raises(TunelabError, match="tunelab's backend"):
        load_gguf_qlora_base(_cfg(tiny_gguf("q4_1"), quant_type="gguf", quant_backend="bitsandbytes"))
    cfg = _cfg(tiny_model_dir)  # a plain folder: nf4
    assert load_gguf_qlora_base(cfg) is None and resolve(cfg).method.quant_type == "nf4"


def test_one_qlora_step_on_kept_blocks_changes_the_adapter(tiny_gguf):
    from tunelab.adapters.lora import apply_lora, lora_state
    from tunelab.quant.gguf_load import load_gguf_qlora_base

    from tunelab.methods import resolve

    cfg = _cfg(tiny_gguf("q4_1"))
    model, tok, rm = load_gguf_qlora_base(cfg)
    assert resolve(cfg).method.quant_type == "gguf" and rm.source == "gguf" and tok.pad_token is not None
    kept = [(m, m.qs.clone(), m.d.clone()) for m in model.modules() if isinstance(m, GGUFBlockLinear)]
    model = apply_lora(model, cfg.method)
    before = lora_state(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.tensor([tok("def main(): return 0, lists and dicts").input_ids])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    after = lora_state(model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("lora_B" in k for k in changed) and any("lora_A" in k for k in changed)
    assert kept and all(torch.equal(m.qs, qs) and torch.equal(m.d, d) for m, qs, d in kept)  # blocks never move


def test_k_quant_blocks_give_transformers_gguf_logits(tmp_path):
    """A Q4_K_M-like file (Q4_K Linears, Q6_K for attn_v and ffn_down; random valid super-blocks, as
    gguf-py cannot quantize K-quants) on a hidden-256 tiny Llama: blocks kept, transformers' logits."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.quant.test_gguf_blocks import _k_blocks
    from tunelab.export import gguf as export_gguf
    from tunelab.export import gguf_tensors
    from tunelab.models.tiny import build_tiny_llama
    from tunelab.quant.gguf_load import build_model

    model_dir = build_tiny_llama(tmp_path / "tiny256", hidden=256)
    original_type, original_data = gguf_tensors.choose_type, export_gguf._tensor_data

    def k_type(name, shape, quant, tied):
        qtype, fell_back = original_type(name, shape, quant, tied)
        if name.startswith("blk.") and len(shape) == 2:
            return (T.Q6_K if ("attn_v" in name or "ffn_down" in name) else T.Q4_K), False
        return qtype, fell_back

    def k_data(f, item):
        if item.qtype in (T.Q4_K, T.Q6_K):
            fmt = "q4_k" if item.qtype == T.Q4_K else "q6_k"
            return _k_blocks(fmt, item.shape[0], item.shape[1] // 256, seed=len(item.name))
        return original_data(f, item)

    path = tmp_path / "tiny-q4_k_m.gguf"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gguf_tensors, "choose_type", k_type)
        mp.setattr(export_gguf, "_tensor_data", k_data)
        export_gguf.write_gguf(model_dir, path, "q8_0")
    ref = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32).eval()
    model = build_model(path, AutoConfig.from_pretrained(str(tmp_path), gguf_file=path.name))
    assert {m.fmt for m in model.modules() if isinstance(m, GGUFBlockLinear)} == {"q4_k", "q6_k"}
    ids = torch.randint(0, ref.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, rtol=1e-5, atol=1e-5)


def test_sft_qlora_on_a_gguf_trains_its_blocks_and_reloads(tiny_gguf, tmp_path, monkeypatch):
    """`tunelab train` path: qlora on a Q4_1 GGUF (quant_type auto) trains on the kept blocks, records
    quant_type gguf in config.yaml, and the run reloads for generation (the base loaded whole)."""
    import yaml

    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))  # the reload converts the GGUF into its cache

    from tunelab.config import from_dict
    from tunelab.infer.generate import Generator
    from tunelab.train.recipes.sft import run_sft

    cfg = from_dict({
        "model": {"name": str(tiny_gguf("q4_1"))},
        "data": {"train": "examples/data/tunebot/train.jsonl", "validation": "examples/data/tunebot/validation.jsonl"},
        "method": {"name": "qlora", "r": 8, "layers": "all"},
        "train": {"lr": 5e-3, "max_steps": 4, "batch_size": 8},
        "output": {"dir": str(tmp_path / "runs"), "name": "gguf"},
        "eval": {"from_validation": 1, "max_new_tokens": 3},
    })
    out = run_sft(cfg, quiet=True)
    assert out.val_after < out.val_before
    saved = yaml.safe_load((out.run_dir / "config.yaml").read_text())
    assert saved["method"]["quant_type"] == "gguf"
    gen = Generator.from_run(out.run_dir)
    assert isinstance(gen.reply([{"role": "user", "content": "hi"}], max_new_tokens=2), str)
