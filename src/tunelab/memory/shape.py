"""The shape of a model as the memory estimate needs it, read from its config.json (never its weights)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError

LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "granite", "smollm3", "olmo2")


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Llama-family decoder, read from config.json."""

    model_type: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False

    @classmethod
    def from_config(cls, cfg: dict, where: str = "MODEL") -> "ModelShape":
        cfg = cfg.get("text_config", cfg)
        mt = cfg.get("model_type", "")
        if mt not in LLAMA_LIKE:
            raise TunelabError(f"memory estimate: model_type {mt!r} is not supported", where=where,
                               hint=f"supported: {', '.join(LLAMA_LIKE)}")
        h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        attn_bias = bool(cfg.get("attention_bias", mt == "qwen2"))  # qwen2: q, k, v biases
        return cls(mt, cfg["vocab_size"], h, cfg["num_hidden_layers"], heads,
                   cfg.get("num_key_value_heads") or heads, cfg.get("head_dim") or h // heads,
                   cfg["intermediate_size"], bool(cfg.get("tie_word_embeddings", mt == "gemma")),
                   qkv_bias=attn_bias, o_bias=attn_bias and mt != "qwen2", mlp_bias=bool(cfg.get("mlp_bias", False)),
                   qk_norm=mt == "qwen3")

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> list[tuple[str, int, int]]:
        """(name, in, out) of the 7 projections of one block: what LoRA adapts and QLoRA quantizes."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        return [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h),
                ("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)]

    @property
    def linear_params(self) -> int:
        """Weights of all block Linears, L sum(in x out) (biases excluded)."""
        return self.layers * sum(a * b for _, a, b in self.linears())

    @property
    def params(self) -> int:
        """Total parameters, as `sum(p.numel() for p in model.parameters())` counts them."""
        per_layer_extra = 2 * self.hidden  # input and post-attention RMSNorm
        per_layer_extra += (self.q_dim + 2 * self.kv_dim) * self.qkv_bias + self.hidden * self.o_bias
        per_layer_extra += (2 * self.intermediate + self.hidden) * self.mlp_bias
        per_layer_extra += 2 * self.head_dim * self.qk_norm  # qwen3: q_norm, k_norm
        head = 0 if self.tied else self.vocab * self.hidden
        return self.vocab * self.hidden + self.linear_params + self.layers * per_layer_extra + self.hidden + head

    def lora_params(self, r: int, blocks: int | None = None) -> int:
        """T = L' r sum(in + out) over the 7 projections (A: r x in, B: out x r) of L' adapted blocks."""
        return (self.layers if blocks is None else blocks) * r * sum(a + b for _, a, b in self.linears())


def read_config(model: str) -> tuple[dict, str]:
    """config.json of an alias, model folder or config file (never the weights): (dict, path)."""
    p = Path(model)
    if p.is_file() and p.suffix != ".gguf":  # a .gguf goes through the registry: its converted folder's config
        path = p
    elif (p / "config.json").is_file():
        path = p / "config.json"
    else:
        from tunelab.models.registry import resolve

        rm = resolve(model, where="MODEL")  # an alias may convert its GGUF once (~30 s)
        if rm.source == "hub":
            try:
                from huggingface_hub import hf_hub_download

                path = Path(hf_hub_download(rm.path, "config.json"))
            except Exception as e:  # offline, unknown repo
                raise TunelabError(f"cannot read config.json of '{model}' ({type(e).__name__})", where="MODEL",
                                   hint="give an alias (`tunelab models`), a model folder or a config.json") from e
        else:
            path = Path(rm.path) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")), str(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:  # a binary file given as a config
        raise TunelabError(f"cannot read {path}: {e}", where="MODEL") from e
