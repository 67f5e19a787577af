"""LoRA GGUF export (`tunelab.export.lora_gguf`): the metadata llama.cpp's --lora reads, and per
layer an A/B pair whose (un-permuted) product is the PEFT adapter's; adapters llama.cpp cannot
apply are refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tunelab.errors import TunelabError

PROJ = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
        "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_run):
    """A 2-step LoRA run (r=4, alpha=16, every linear layer) on 8 examples of the tiny Llama."""
    return tiny_run(tmp_path_factory.mktemp("lora_gguf"), "lora", n_train=8, n_val=1, steps=2, system=None)


def _peft(run):
    from safetensors.torch import load_file

    sd = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    out = {}
    for k, v in sd.items():
        layer = int(k.split(".layers.")[1].split(".")[0])
        proj = k.split(".lora_")[0].rsplit(".", 1)[1]
        out.setdefault(f"blk.{layer}.{PROJ[proj]}.weight", {})[k.split(".lora_")[1][0]] = v.numpy()
    return out


def _read(path):
    from gguf import GGUFReader

    r = GGUFReader(path)
    fields = {k: f.contents() for k, f in r.fields.items()}
    return fields, {t.name: (t.tensor_type.name, np.array(t.data)) for t in r.tensors}


def test_metadata_and_products_match_peft(run, tiny_model_dir, tmp_path):
    from tunelab.export.gguf import unpermute_qk
    from tunelab.export.lora_gguf import write_lora_gguf

    info = write_lora_gguf(run, tmp_path / "adapter.gguf")
    fields, tensors = _read(info.path)
    assert fields["general.architecture"] == "llama" and fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora" and fields["adapter.lora.alpha"] == 16.0
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    peft = _peft(run)
    assert info.tensors == len(tensors) == 2 * len(peft) == 2 * 2 * 7
    scale = 16.0 / 4  # what both PEFT and llama.cpp (alpha / r, r from lora_a) multiply B A by
    for name, ab in peft.items():
        (ta, a), (tb, b) = tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"]
        assert ta == tb == "F32" and a.shape == ab["A"].shape and b.shape == ab["B"].shape  # (r, in), (out, r)
        np.testing.assert_array_equal(a, ab["A"])  # A is never permuted
        heads = cfg["num_attention_heads"] if "attn_q" in name else cfg["num_key_value_heads"]
        b_hf = unpermute_qk(b, heads) if ("attn_q" in name or "attn_k" in name) else b
        np.testing.assert_allclose(scale * b_hf @ a, scale * ab["B"] @ ab["A"], rtol=0, atol=1e-7)
        if "attn_q" in name or "attn_k" in name:
            assert not np.array_equal(b, ab["B"])  # really permuted
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_adapter_on_base_gguf_is_the_merged_gguf(run, tmp_path):
    """What llama.cpp computes: W_gguf + (alpha/r) B_gguf A_gguf equals the GGUF of the merged model,
    for every adapted matrix (q/k included, in their permuted order)."""
    from tunelab.export.gguf import write_gguf
    from tunelab.export.lora_gguf import write_lora_gguf
    from tunelab.export.merge import merge_run
    from tunelab.runs.load import load_run

    _, cfg = load_run(run)
    base = write_gguf(cfg["model"]["name"], tmp_path / "base.gguf", "f32")
    merge_run(run, tmp_path / "merged", dtype="fp32")
    merged = write_gguf(tmp_path / "merged", tmp_path / "merged.gguf", "f32")
    lora = write_lora_gguf(run, tmp_path / "lora.gguf")
    _, wb = _read(base.path)
    _, wm = _read(merged.path)
    fields, wl = _read(lora.path)
    for name in [n[: -len(".lora_a")] for n in wl if n.endswith(".lora_a")]:
        a, b = wl[name + ".lora_a"][1], wl[name + ".lora_b"][1]
        applied = wb[name][1] + fields["adapter.lora.alpha"] / a.shape[0] * (b @ a)
        np.testing.assert_allclose(applied, wm[name][1], rtol=0, atol=1e-5)


def _variant(run, tmp_path, name, edit_config=None, edit_state=None):
    """A copy of `run` whose adapter config / weights were edited."""
    from safetensors.torch import load_file, save_file

    dst = tmp_path / name
    shutil.copytree(run, dst)
    ad = dst / "adapter"
    if edit_config:
        cfg = json.loads((ad / "adapter_config.json").read_text())
        edit_config(cfg)
        (ad / "adapter_config.json").write_text(json.dumps(cfg))
    if edit_state:
        sd = load_file(str(ad / "adapter_model.safetensors"))
        edit_state(sd)
        save_file(sd, str(ad / "adapter_model.safetensors"))
    return dst


def test_rslora_scale_is_folded_into_b(run, tmp_path):
    """use_rslora: PEFT scales by alpha/sqrt(r); llama.cpp applies alpha/r, so B carries sqrt(r)."""
    from tunelab.export.gguf import unpermute_qk
    from tunelab.export.lora_gguf import write_lora_gguf

    rs = _variant(run, tmp_path, "rslora", edit_config=lambda c: c.update(use_rslora=True))
    fields, tensors = _read(write_lora_gguf(rs, tmp_path / "rs.gguf").path)
    peft = _peft(run)
    name = "blk.1.ffn_up.weight"
    a, b = tensors[name + ".lora_a"][1], tensors[name + ".lora_b"][1]
    np.testing.assert_allclose(fields["adapter.lora.alpha"] / 4 * b @ a, 16.0 / 2 * peft[name]["B"] @ peft[name]["A"],
                               rtol=1e-6, atol=1e-8)
    q = tensors["blk.0.attn_q.weight.lora_b"][1]
    np.testing.assert_allclose(unpermute_qk(q, 4), 2 * peft["blk.0.attn_q.weight"]["B"], rtol=1e-6)


def test_refusals(run, tmp_path):
    from tunelab.export.lora_gguf import write_lora_gguf

    def embed(sd):
        sd["base_model.model.model.embed_tokens.lora_embedding_A"] = torch.zeros(4, 512)

    cases = [
        ("mts", {"edit_config": lambda c: c.update(modules_to_save=["lm_head"])}, "modules_to_save"),
        ("dora", {"edit_config": lambda c: c.update(use_dora=True)}, "DoRA"),
        ("embed", {"edit_state": embed}, "embedding or lm_head"),
    ]
    for name, edits, match in cases:
        with pytest.raises(TunelabError, match=match) as e:
            write_lora_gguf(_variant(run, tmp_path, name, **edits), tmp_path / f"{name}.gguf")
        assert "llama.cpp cannot apply it" in str(e.value) and "\n" not in str(e.value)
        assert not (tmp_path / f"{name}.gguf").exists()
    with pytest.raises(TunelabError, match="not a tunelab run"):
        write_lora_gguf(tmp_path, tmp_path / "x.gguf")
    full = _variant(run, tmp_path, "full")
    shutil.rmtree(full / "adapter")
    with pytest.raises(TunelabError, match="no LoRA adapter"):
        write_lora_gguf(full, tmp_path / "y.gguf")


@pytest.mark.slow
def test_llama_cpp_applies_the_adapter_like_the_merge(run, tmp_path):
    """llama.cpp itself (llama-cpp-python): base.gguf + --lora adapter.gguf gives the logits of the
    merged model's GGUF (all F32), and the adapter does change them."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from tunelab.export.gguf import write_gguf
    from tunelab.export.lora_gguf import write_lora_gguf
    from tunelab.export.merge import merge_run
    from tunelab.runs.load import load_run

    _, cfg = load_run(run)
    base = write_gguf(cfg["model"]["name"], tmp_path / "base.gguf", "f32").path
    merge_run(run, tmp_path / "merged", dtype="fp32")
    merged = write_gguf(tmp_path / "merged", tmp_path / "merged.gguf", "f32").path
    lora = write_lora_gguf(run, tmp_path / "lora.gguf").path
    ids = list(range(5, 29))

    def logits(model, adapter=None):
        kw = {"lora_path": str(adapter)} if adapter else {}
        llm = llama_cpp.Llama(model_path=str(model), n_ctx=64, logits_all=True, verbose=False, **kw)
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])

    with_adapter, want = logits(base, lora), logits(merged)
    assert np.abs(with_adapter - want).max() < 1e-3
    assert np.abs(logits(base) - want).max() > 1e-2
