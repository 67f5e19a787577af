"""method.layers: LoRA on the last N blocks only, and nothing below them takes part in backward."""

import pytest
import torch

from tunelab.adapters.lora import adapted_layers, apply_lora, lora_state
from tunelab.config import MethodConfig, from_dict
from tunelab.errors import TunelabError


def _model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def _block(name: str) -> int:
    parts = name.split(".")
    return int(parts[parts.index("layers") + 1])


def test_adapted_layers_picks_the_last_n(tiny_model_dir):
    model = _model(tiny_model_dir)
    n = model.config.num_hidden_layers
    assert adapted_layers(model, "all") is None
    assert adapted_layers(model, 1) == [n - 1]
    assert adapted_layers(model, n + 5) is None  # more than there are = all


def test_only_last_block_has_lora_and_lower_blocks_record_no_graph(tiny_model_dir):
    model = apply_lora(_model(tiny_model_dir), MethodConfig(r=4, layers=1, dropout=0.0))
    n = model.config.num_hidden_layers
    blocks = {_block(k) for k in lora_state(model)}
    assert blocks == {n - 1}
    # LoRA B starts at 0: nudge it so the adapter matters, then check where gradients flow
    for k, p in model.named_parameters():
        if "lora_B" in k:
            torch.nn.init.normal_(p, std=0.02)
    seen = {}
    layers = model.base_model.model.model.layers
    for i, blk in enumerate(layers):
        blk.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, (out[0] if isinstance(out, tuple) else out).requires_grad))
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    assert seen == {i: i == n - 1 for i in range(n)}  # frozen blocks below: no autograd graph
    grads = {k: p.grad for k, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_layers_must_be_positive():
    with pytest.raises(TunelabError, match="method.layers"):
        from_dict({"model": {"name": "x"}, "data": {"train": "t.jsonl"}, "method": {"layers": 0}})


def test_checkpointing_keeps_lower_blocks_out_of_backward(tiny_model_dir):
    """transformers and peft switch the embeddings' requires-grad on with checkpointing; ours switches it
    off again (non-reentrant checkpointing does not need it), so frozen blocks stay out of backward."""
    from tunelab.train.activation_ckpt import enable
    from tunelab.ops.recompute import is_on

    model = apply_lora(_model(tiny_model_dir), MethodConfig(r=4, layers=1))
    enable(model)
    assert is_on(model)
    n = model.config.num_hidden_layers
    seen = {}
    for i, blk in enumerate(model.base_model.model.model.layers):
        blk.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, (out[0] if isinstance(out, tuple) else out).requires_grad))
    model.train()
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    assert seen == {i: i == n - 1 for i in range(n)}
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
