"""A synthetic Llama checkpoint: a config with random weights, written shard by shard in bf16.

For tests and benchmarks of big-model paths (streamed quantized loading, PTQ, merge) on a machine
without a model hub. The weights are drawn tensor by tensor (normal(0, 0.02), norms = 1, as
transformers' Llama init) and handed to a `ShardWriter`, so at most one shard (`max_shard_bytes`) is
held, never the model. The folder loads with `AutoModelForCausalLM.from_pretrained` like any
checkpoint; its tokenizer is the tiny model's 512-token BPE (`tiny.build_tokenizer`), so ids above
511 exist in the embeddings but are never produced by the tokenizer.

    disk = 2 bytes x params (+ the tokenizer, ~50 kB):  7B preset 6.74e9 x 2 = 13.5 GB

Presets (`PRESETS`): "7b" (Llama-2-7B shapes: 6.74B params), "1b" (TinyLlama-1.1B shapes), "100m"
(a ~0.1B model with a small vocabulary, for tests).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tunelab.errors import TunelabError


def _shape(h: int, layers: int, i: int, heads: int, kv: int, vocab: int) -> dict:
    return {"hidden_size": h, "num_hidden_layers": layers, "intermediate_size": i, "num_attention_heads": heads,
            "num_key_value_heads": kv, "vocab_size": vocab, "tie_word_embeddings": False}


PRESETS: dict[str, dict] = {
    "7b": _shape(4096, 32, 11008, 32, 32, 32000),
    "1b": _shape(2048, 22, 5632, 32, 4, 32000),
    "100m": _shape(768, 12, 2048, 12, 4, 4096),
}
DISK_MARGIN = 256 * 1024**2  # bytes left free beyond the checkpoint itself


def llama_config(preset: str | dict, **overrides) -> dict:
    """A Llama config.json dict from a preset name (or a dict of its fields) plus overrides."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise TunelabError(f"unknown synthetic preset '{preset}'", where="--params", hint=f"one of: {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
           "initializer_range": 0.02, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "attention_bias": False, "mlp_bias": False, "dtype": "bfloat16"}
    cfg.update(preset)
    cfg.update(overrides)
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    return cfg


def tensor_shapes(cfg: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every weight in LlamaForCausalLM's state_dict order (the head last, unless tied)."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    q = cfg["num_attention_heads"] * cfg["head_dim"]
    kv = cfg["num_key_value_heads"] * cfg["head_dim"]
    out = [("model.embed_tokens.weight", (v, h))]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        out += [(p + "self_attn.q_proj.weight", (q, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, q)),
                (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i)),
                (p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
    out.append(("model.norm.weight", (h,)))
    if not cfg.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", (v, h)))
    return out


def param_count(cfg: dict) -> int:
    n = 0
    for _, shape in tensor_shapes(cfg):
        k = 1
        for s in shape:
            k *= s
        n += k
    return n


def check_disk(folder: Path, need: int) -> None:
    """Refuse in one line when the file system holding `folder` has less than `need` + a margin free."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need + DISK_MARGIN:
        raise TunelabError(f"not enough disk space for the synthetic checkpoint: it needs {need / 1e9:.2f} GB "
                           f"(+ {DISK_MARGIN / 1e9:.2f} GB margin), {probe} has {free / 1e9:.2f} GB free",
                           where=str(folder), hint="free some space or write it elsewhere")


def write_synthetic_llama(out: str | Path, preset: str | dict = "100m", *, seed: int = 0,
                          max_shard_bytes: int = 1024**3, overwrite: bool = False, **overrides) -> Path:
    """Write a random-init bf16 Llama checkpoint (config.json, shards + index, tokenizer, DONE) to `out`.

    Tensors are drawn one at a time from a seeded generator (the same seed gives the same bytes) and
    written through `ShardWriter` (one shard held at a time). An existing complete folder is kept
    unless `overwrite`; the folder is written under a temporary name and renamed when complete.
    """
    import torch

    from tunelab.models.folder import building
    from tunelab.models.shards import ShardWriter
    from tunelab.models.tiny import build_tokenizer

    out = Path(out)
    if (out / "DONE").exists() and not overwrite:
        return out
    cfg = llama_config(preset, **overrides)
    need = 2 * param_count(cfg)
    check_disk(out.parent if out.parent != Path("") else Path("."), need)
    tok = build_tokenizer()
    cfg.update(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    with building(out, f"synthetic llama, {param_count(cfg)} params, seed {seed}\n") as tmp:
        gen = torch.Generator().manual_seed(seed)
        writer = ShardWriter(tmp, max_shard_bytes, metadata={"producer": "tunelab.models.synthetic"})
        std = cfg["initializer_range"]
        for name, shape in tensor_shapes(cfg):
            if name.endswith("norm.weight"):
                t = torch.ones(shape, dtype=torch.bfloat16)
            else:  # fp32 draw, one bf16 rounding
                t = torch.empty(shape, dtype=torch.float32).normal_(0.0, std, generator=gen).to(torch.bfloat16)
            writer.add(name, t)
            del t
        writer.close()
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        tok.save_pretrained(tmp)
    return out
