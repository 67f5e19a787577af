"""The decode engine on every family of tunelab.models.families (infer/arch.py, infer/layers.py):
greedy tokens equal to transformers' `generate` in fp32 for left-padded batches of prompts longer
than the sliding window (16 tokens), unmerged and per-row-routed LoRA equal to `generate` on the
PEFT model, `stream` equal to `generate`, bf16 finite and close, and refusals that name the piece."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunelab.infer.decode import DecodeEngine, Unsupported
from tunelab.models.families import FAMILIES, build_tiny

NEW = 24
_REFS: dict = {}  # (family, adapter?) -> transformers' greedy tokens per prompt


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: build_tiny(name, root / name) for name in FAMILIES}


def _model(family_dirs, name):
    m = AutoModelForCausalLM.from_pretrained(family_dirs[name], dtype=torch.float32).eval()
    # random tiny models repeat one token; sharper weights give varied greedy paths. Gemma's embeddings
    # are multiplied by sqrt(hidden) = 8 in the forward already, so they are scaled down instead.
    emb = 0.25 if hasattr(m.model.embed_tokens, "embed_scale") else 4.0
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.dim() == 2:
                p.mul_(emb if "embed" in n else 4.0)
    m.generation_config.eos_token_id = None  # compare NEW tokens, EOS or not
    return m


def _prompts():
    g = torch.Generator().manual_seed(3)
    return [torch.randint(5, 300, (n,), generator=g).tolist() for n in (37, 26)]  # > the 16-token window


def _hf_greedy(model, key):
    """transformers' greedy tokens for each prompt alone (memoised per model)."""
    if key not in _REFS:
        out = []
        for p in _prompts():
            ids = torch.tensor([p])
            with torch.no_grad():
                gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW,
                                     min_new_tokens=NEW, do_sample=False, pad_token_id=0)
            out.append(gen[0, len(p):].tolist())
        _REFS[key] = out
    return _REFS[key]


def _lora(model):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(1)
    with torch.no_grad():
        for k, p in peft_model.named_parameters():
            if "lora_B" in k:
                p.normal_(std=0.3)
    return peft_model.eval()


def _ragged_greedy(eng, prompts, route=None):
    """Greedy tokens through the server's path: prefill (right-padded) then step_ragged."""
    n = max(len(p) for p in prompts)
    cache = eng.new_cache(len(prompts), n + NEW)
    logits = eng.prefill(prompts, cache, route)
    slots = torch.tensor([len(p) for p in prompts])
    out = [[] for _ in prompts]
    for _ in range(NEW):
        nxt = logits.argmax(-1)
        for r, t in enumerate(nxt.tolist()):
            out[r].append(t)
        logits = eng.step_ragged(nxt, slots, cache, route)
        slots = slots + 1
    return out


@pytest.mark.parametrize("name", list(FAMILIES))
def test_greedy_padded_batch_equals_transformers(family_dirs, name):
    model = _model(family_dirs, name)
    eng = DecodeEngine.from_model(model)
    ref = _hf_greedy(model, name)
    assert len(set(ref[0] + ref[1])) > 3  # varied paths, not one repeated token
    assert eng.generate(_prompts(), NEW) == ref  # left-padded batch of 2
    assert _ragged_greedy(eng, _prompts()) == ref  # the server's ragged steps
    assert list(eng.stream(_prompts()[0], NEW)) == ref[0]


@pytest.mark.parametrize("name", ["mistral", "gemma2", "gemma3"])
def test_sliding_window_acts(family_dirs, name):
    """The prompts are longer than the window: dropping it changes the logits (so the test above
    would see a missing window)."""
    eng = DecodeEngine.from_model(_model(family_dirs, name))
    assert any(b.window == 16 for b in eng.w.blocks)
    p = _prompts()[0]
    windowed = eng.logits(p)[-1]
    for b in eng.w.blocks:
        b.window = None
    assert (eng.logits(p)[-1] - windowed).abs().max() > 1e-3


@pytest.mark.parametrize("name", list(FAMILIES))
def test_unmerged_and_routed_lora_equal_peft_generate(family_dirs, name):
    peft_model = _lora(_model(family_dirs, name))
    ref = _hf_greedy(peft_model, (name, "lora"))
    apart = DecodeEngine.from_model(peft_model, merge=False)
    assert all(b.qkv.loras and b.gate_up.loras and b.o.loras and b.down.loras for b in apart.w.blocks)
    assert apart.generate(_prompts(), NEW) == ref
    # the same adapter as a named one (the server's several adapters over one base): row 0 uses it,
    # row 1 the base, which decodes as transformers' base model does
    for b in apart.w.blocks:
        for p in (b.qkv, b.o, b.gate_up, b.down):
            p.named["a"], p.loras = p.loras[0], []
    base_ref = _REFS.get(name) or _hf_greedy(_model(family_dirs, name), name)
    routed = _ragged_greedy(apart, _prompts(), [("a", torch.tensor([0]))])
    assert routed == [ref[0], base_ref[1]]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_bf16_runs_as_transformers_bf16(family_dirs, name):
    """bf16 rounds differently from fp32 (Gemma 2's eager attention by ~10% of the logits' range in
    transformers itself): the engine's bf16 logits are finite and within 10% of the range of
    transformers' own bf16 forward."""
    model = _model(family_dirs, name)
    eng = DecodeEngine.from_model(model, dtype=torch.bfloat16)
    p = _prompts()[0]
    ours = eng.logits(p).float()
    with torch.no_grad():
        ref = model.to(torch.bfloat16)(torch.tensor([p])).logits[0].float()
    assert torch.isfinite(ours).all()
    assert (ours - ref).abs().max() <= 0.1 * (ref.max() - ref.min())
    assert [len(r) for r in eng.generate(_prompts(), 8)] == [8, 8]


def test_gemma3_soft_caps_as_transformers(family_dirs):
    """gemma3 with final_logit_softcapping set: logits c tanh(logits / c), as transformers; its
    attn_logit_softcapping is stored but not applied by transformers, nor by the engine."""
    model = _model(family_dirs, "gemma3")
    p = _prompts()[0]
    with torch.no_grad():
        plain = model(torch.tensor([p])).logits[0]
    model.config.final_logit_softcapping, model.config.attn_logit_softcapping = 0.5, 0.1
    with torch.no_grad():
        ref = model(torch.tensor([p])).logits[0]
    eng = DecodeEngine.from_model(model)
    assert ref.abs().max() < 0.5 and (ref - plain).abs().max() > 0.1  # the cap acts
    assert (eng.logits(p) - ref).abs().max() <= 1e-5


_PHI3 = dict(vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, hidden_size=64, intermediate_size=128,
             num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)


def test_phi3_longrope_is_refused_by_name():
    from transformers import Phi3Config, Phi3ForCausalLM

    hd = 16
    cfg = Phi3Config(**_PHI3, max_position_embeddings=256,
                     original_max_position_embeddings=64,
                     rope_scaling={"rope_type": "longrope", "short_factor": [1.0] * (hd // 2),
                                   "long_factor": [2.0] * (hd // 2)})
    model = Phi3ForCausalLM(cfg)
    with pytest.raises(Unsupported, match="phi3 longrope rope scaling"):
        DecodeEngine.from_model(model)
    from tunelab.infer.engine_choice import build_engine

    engine, reason = build_engine(model)  # what a Generator falls back on, and reports as engine_reason
    assert engine is None and reason.startswith("phi3 longrope rope scaling")


def test_partial_rotary_is_refused_by_name():
    from transformers import Phi3Config, Phi3ForCausalLM

    cfg = Phi3Config(**_PHI3, partial_rotary_factor=0.5)
    with pytest.raises(Unsupported, match="phi3 partial rotary embedding"):
        DecodeEngine.from_model(Phi3ForCausalLM(cfg))


def test_llama_layouts_keep_the_plain_forward(family_dirs):
    """Llama-layout families run decode.py's own forward; the others infer/layers.py's."""
    plain = {name for name in FAMILIES
             if DecodeEngine.from_model(AutoModelForCausalLM.from_pretrained(family_dirs[name])).w.plain}
    assert plain == {"llama", "llama3", "qwen2", "phi3"}
