"""The largest model that fits: `tunelab memory`'s estimate over a ladder of common Llama-family shapes.

Each rung is a config.json's shapes (no weights): the estimate of every method at the command's
settings (batch, seq, checkpointing, r, layers, optimizer) is compared with the memory available, and
the largest rung whose process peak (`MemoryEstimate.rss`) fits is reported per method.
"""

from __future__ import annotations


def _llama(h: int, layers: int, i: int, heads: int, kv: int, vocab: int, tied: bool = False) -> dict:
    return {"model_type": "llama", "hidden_size": h, "num_hidden_layers": layers, "intermediate_size": i,
            "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab,
            "tie_word_embeddings": tied}


# (label, shapes), smallest first: SmolLM2-135M, Qwen2.5-0.5B-like, TinyLlama-1.1B, Llama-3.2-3B,
# Llama-2-7B, Llama-3-8B, Llama-2-13B, CodeLlama-34B, Llama-2-70B
LADDER: list[tuple[str, dict]] = [
    ("135M (SmolLM2-135M)", _llama(576, 30, 1536, 9, 3, 49152, tied=True)),
    ("0.5B (Qwen2.5-0.5B shapes)", _llama(896, 24, 4864, 14, 2, 151936, tied=True)),
    ("1.1B (TinyLlama)", _llama(2048, 22, 5632, 32, 4, 32000)),
    ("3B (Llama-3.2-3B)", _llama(3072, 28, 8192, 24, 8, 128256, tied=True)),
    ("7B (Llama-2-7B)", _llama(4096, 32, 11008, 32, 32, 32000)),
    ("8B (Llama-3-8B)", _llama(4096, 32, 14336, 32, 8, 128256)),
    ("13B (Llama-2-13B)", _llama(5120, 40, 13824, 40, 40, 32000)),
    ("34B (CodeLlama-34B)", _llama(8192, 48, 22016, 64, 8, 32000)),
    ("70B (Llama-2-70B)", _llama(8192, 80, 28672, 64, 8, 32000)),
]


def largest_fitting(available: int, methods=("full", "lora", "qlora"), **settings) -> dict[str, str | None]:
    """method -> label of the largest LADDER rung whose estimated process peak is <= `available` bytes
    (None: not even the smallest). `settings` are `estimate`'s keyword arguments (batch, seq, ...)."""
    from tunelab.memory.estimator import estimate

    out: dict[str, str | None] = {}
    for method in methods:
        best = None
        for label, cfg in LADDER:
            e = estimate(dict(cfg, _name_or_path=label), method, detect=False, **settings)
            if e.rss <= available:
                best = label
        out[method] = best
    return out
