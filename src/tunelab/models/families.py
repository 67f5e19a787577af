"""One entry per model architecture (family): what varies between Llama, Mistral, Qwen, Gemma, Phi, OLMo.

A `Family` holds the facts every layer above asks about an architecture, so that none of them compares
a `model_type` string:

    name            our name, also the tiny model's alias suffix: tiny-<name>
    model_types     transformers' `config.model_type` values it covers (gemma3 text-only is "gemma3_text")
    tiny_config     a transformers config class, built with no download, for a ~0.1M-param random model
    template        the built-in chat format (data/templates.py) a base model of this family uses
    quirks          what the forward does differently from Llama (read by the decode engine and export,
                    which say which quirk they do not handle)

`family_of(cfg)` finds the entry for a transformers config (or its dict); `FAMILIES` lists them all.
The decode engine (infer/), GGUF export (export/) and the templates keep their per-family pieces in
registries keyed by `Family.name`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tunelab.errors import TunelabError


@dataclass(frozen=True)
class Family:
    name: str
    display: str
    model_types: tuple[str, ...]
    architecture: str  # the transformers CausalLM class name written in config.json
    tiny_config: Callable[..., object]  # (vocab, eos, pad, hidden, layers, heads) -> PretrainedConfig
    template: str  # built-in chat format for a base model with no chat template of its own
    quirks: tuple[str, ...] = field(default_factory=tuple)
    tiny_layers: int = 2  # the tiny model's depth: enough for every layer kind the family has


# ---- tiny configs: transformers' own config classes, the shapes of tiny-llama (hidden 64, 2 layers) -------------
def _common(vocab: int, eos: int, pad: int, hidden: int, layers: int, heads: int) -> dict:
    return dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=heads // 2, max_position_embeddings=1024,
                eos_token_id=eos, pad_token_id=pad, bos_token_id=None, tie_word_embeddings=True,
                initializer_range=0.1)  # 0.02 (the default) gives 0.1M-param models one repeated greedy token


def _llama(vocab, eos, pad, hidden=64, layers=2, heads=4):
    from transformers import LlamaConfig

    return LlamaConfig(**_common(vocab, eos, pad, hidden, layers, heads))


def _llama3(vocab, eos, pad, hidden=64, layers=2, heads=4):
    """Llama 3.x: llama3 rope scaling (frequencies below 1/low_freq_factor of the original context are
    divided by `factor`, a smooth ramp between); a small original context so that the ramp is exercised."""
    from transformers import LlamaConfig

    return LlamaConfig(**_common(vocab, eos, pad, hidden, layers, heads), rope_theta=500000.0,
                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64})


def _mistral(vocab, eos, pad, hidden=64, layers=2, heads=4):
    """A sliding window of 16 tokens: any test prompt longer than that sees the window act."""
    from transformers import MistralConfig

    return MistralConfig(**_common(vocab, eos, pad, hidden, layers, heads), sliding_window=16)


def _qwen2(vocab, eos, pad, hidden=64, layers=2, heads=4):
    from transformers import Qwen2Config

    return Qwen2Config(**_common(vocab, eos, pad, hidden, layers, heads), use_sliding_window=False)


def _qwen3(vocab, eos, pad, hidden=64, layers=2, heads=4):
    from transformers import Qwen3Config

    return Qwen3Config(**_common(vocab, eos, pad, hidden, layers, heads), head_dim=hidden // heads,
                       use_sliding_window=False)


def _gemma2(vocab, eos, pad, hidden=64, layers=2, heads=4):
    """Gemma 2: alternating sliding (window 16) and global layers, logit soft-capping, pre+post norms."""
    from transformers import Gemma2Config

    return Gemma2Config(**_common(vocab, eos, pad, hidden, layers, heads), head_dim=hidden // heads,
                        sliding_window=16, query_pre_attn_scalar=hidden // heads)


def _gemma3(vocab, eos, pad, hidden=64, layers=6, heads=4):
    """Gemma 3 text: Gemma 3's own layer pattern, every 6th layer global and the others sliding (window 16)
    (llama.cpp's gemma3 graph fixes that pattern in code), q/k norms, a local and a global rope."""
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(**_common(vocab, eos, pad, hidden, layers, heads), head_dim=hidden // heads,
                            sliding_window=16, query_pre_attn_scalar=hidden // heads,
                            layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                                         for i in range(layers)])


def _phi3(vocab, eos, pad, hidden=64, layers=2, heads=4):
    """Phi-3: fused qkv_proj and gate_up_proj."""
    from transformers import Phi3Config

    cfg = _common(vocab, eos, pad, hidden, layers, heads)
    return Phi3Config(**cfg, sliding_window=None, original_max_position_embeddings=1024)


def _olmo2(vocab, eos, pad, hidden=64, layers=2, heads=4):
    """OLMo 2: norms after attention and MLP (no pre-norm), q/k norms over all heads."""
    from transformers import Olmo2Config

    return Olmo2Config(**_common(vocab, eos, pad, hidden, layers, heads))


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("llama", "Llama (SmolLM2, Llama 2)", ("llama",), "LlamaForCausalLM", _llama, "chatml"),
    Family("llama3", "Llama 3.x", ("llama",), "LlamaForCausalLM", _llama3, "llama3", ("llama3 rope",)),
    Family("mistral", "Mistral", ("mistral",), "MistralForCausalLM", _mistral, "mistral", ("sliding window",)),
    Family("qwen2", "Qwen 2 / 2.5", ("qwen2",), "Qwen2ForCausalLM", _qwen2, "chatml", ("qkv bias",)),
    Family("qwen3", "Qwen 3", ("qwen3",), "Qwen3ForCausalLM", _qwen3, "qwen3", ("q/k norms", "thinking")),
    Family("gemma2", "Gemma 2", ("gemma2",), "Gemma2ForCausalLM", _gemma2, "gemma",
           ("sliding window", "embeddings x sqrt(hidden)", "(1 + w) norms", "post norms", "gelu-tanh",
            "soft-capping")),
    Family("gemma3", "Gemma 3", ("gemma3_text", "gemma3"), "Gemma3ForCausalLM", _gemma3, "gemma",
           ("sliding window", "embeddings x sqrt(hidden)", "(1 + w) norms", "post norms", "gelu-tanh",
            "q/k norms", "local rope"), tiny_layers=6),
    Family("phi3", "Phi-3 / Phi-4", ("phi3",), "Phi3ForCausalLM", _phi3, "phi3", ("fused qkv", "fused gate_up")),
    Family("olmo2", "OLMo 2", ("olmo2",), "Olmo2ForCausalLM", _olmo2, "chatml", ("post norms only", "q/k norms")),
]}

# model_type -> the family a checkpoint of that type belongs to (llama3 is told apart by its rope scaling)
_BY_MODEL_TYPE = {t: f for f in FAMILIES.values() if f.name != "llama3" for t in f.model_types}


def _get(cfg, key: str, default=None):
    return cfg.get(key, default) if isinstance(cfg, dict) else getattr(cfg, key, default)


def family_of(cfg, where: str = "model") -> Family:
    """The family of a transformers config (object or config.json dict); TunelabError for one not listed."""
    model_type = _get(cfg, "model_type")
    family = _BY_MODEL_TYPE.get(model_type)
    if family is None:
        raise TunelabError(f"architecture '{model_type}' is not one tunelab knows", where=where,
                           hint=f"known: {', '.join(sorted(_BY_MODEL_TYPE))}")
    if family.name == "llama":
        rope = _get(cfg, "rope_parameters") or _get(cfg, "rope_scaling") or {}
        if rope.get("rope_type", rope.get("type")) == "llama3":
            return FAMILIES["llama3"]
    return family


def tiny_done_text(name: str, layers: int | None = None) -> str:
    """The DONE text of a tiny model: a cache written for another depth is rebuilt (models/registry.py)."""
    return f"tiny random {name}, {layers or FAMILIES[name].tiny_layers} layers\n"


def build_tiny(name: str, out: Path, *, hidden: int = 64, layers: int | None = None, heads: int = 4,
               seed: int = 0) -> Path:
    """Write the tiny random-weight model of family `name` + the tiny BPE tokenizer to `out` (atomically,
    with a DONE marker), as models/tiny.py does for tiny-llama; `layers` None: the family's tiny depth."""
    import torch
    from transformers import AutoModelForCausalLM

    from tunelab.models.folder import building
    from tunelab.models.tiny import build_tokenizer

    family = FAMILIES[name]
    layers = layers or family.tiny_layers
    tok = build_tokenizer()
    config = family.tiny_config(len(tok), tok.eos_token_id, tok.pad_token_id, hidden=hidden, layers=layers,
                                heads=heads)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # transformers zero-inits some norms ((1 + w) kinds); random ones exercise them
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    out = Path(out)
    with building(out, tiny_done_text(name, layers)) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out
