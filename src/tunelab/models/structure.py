"""Where the parts of a transformer are: its blocks, its decoder and its output head."""

from __future__ import annotations

from torch import nn

def blocks_list(model: nn.Module) -> nn.ModuleList | None:
    """The transformer blocks: the first non-empty ModuleList in module order (model.layers,
    encoder.layer, ...), or None."""
    for mod in model.modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            return mod
    return None


def num_blocks(model: nn.Module) -> int:
    """Transformer blocks of `model` (config.num_hidden_layers, else the blocks list's length)."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if n:
        return int(n)
    blocks = blocks_list(model)
    return 0 if blocks is None else len(blocks)


def decoder_and_head(model):
    """(decoder, lm_head) when the model splits that way (Llama, Mistral, Qwen, SmolLM, ...), else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base, "config", None)
    if cfg is None or getattr(cfg, "final_logit_softcapping", None) or not hasattr(base, "get_decoder"):
        return None
    head = base.get_output_embeddings()
    decoder = base.get_decoder()
    if head is None or decoder is None or decoder is base:
        return None
    return decoder, head
