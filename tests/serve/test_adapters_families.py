"""The server reads a family's LoRA files onto the engine's projections: Phi-3's fused qkv_proj and
gate_up_proj as they are, Llama's q/k/v and gate/up stacked; a module the family has not is refused."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from tunelab.infer.decode import DecodeEngine
from tunelab.infer.weights import read_weights
from tunelab.models.families import build_tiny
from tunelab.serve.adapters import attach, read_adapter
from tunelab.serve.errors import APIError


def _adapter(tmp_path, family: str, targets: list[str]):
    """(the base's engine weights, the peft model, its saved adapter folder)."""
    folder = build_tiny(family, tmp_path / family)
    w = read_weights(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32))  # the base, as served
    torch.manual_seed(0)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
                          LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    peft.save_pretrained(tmp_path / f"{family}-adapter")
    return w, peft, tmp_path / f"{family}-adapter"


@pytest.mark.parametrize("family,targets", [
    ("phi3", ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]),
    ("qwen3", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
])
def test_served_adapter_equals_peft(tmp_path, family, targets):
    w, peft, folder = _adapter(tmp_path, family, targets)
    attach(w, "run", read_adapter("run", folder, w))
    engine = DecodeEngine(w, 256)
    torch.manual_seed(1)
    ids = torch.randint(0, peft.config.vocab_size, (1, 20))
    with torch.no_grad():
        want = peft(ids).logits[0, -1]
    got = engine.prefill(ids.tolist(), engine.new_cache(1, 32), route=[("run", None)])[0]
    base = engine.prefill(ids.tolist(), engine.new_cache(1, 32))[0]
    assert (base - want).abs().max() > 1e-3  # the adapter changes the logits, and the server's copy applies it
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_adapter_on_another_family_layout_is_refused(tmp_path):
    _, _, folder = _adapter(tmp_path, "phi3", ["qkv_proj"])
    llama = AutoModelForCausalLM.from_pretrained(build_tiny("llama", tmp_path / "llama"), dtype=torch.float32)
    w = read_weights(llama)
    with pytest.raises(APIError, match="unexpected adapter tensor .*qkv_proj"):
        read_adapter("run", folder, w)
