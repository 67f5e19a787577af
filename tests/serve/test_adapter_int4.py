"""The server reads a run's LoRA onto a base whose engine weights are not dense: int4 codes (what
`tunelab serve` picks for a GGUF-sourced base on a CPU with bf16) and int8 prepacked matrices. The
MLP width comes from the stored matrix, and the served adapter matches peft's logits."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from tests.q4_grid import snap_to_q4_1
from tunelab.infer.decode import DecodeEngine
from tunelab.infer.int4 import int4_kernel_available
from tunelab.infer.weights import read_weights
from tunelab.models.families import build_tiny
from tunelab.serve.adapters import attach, read_adapter

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def grid_base(tmp_path_factory):
    """A tiny Llama folder whose 2-D weights sit on a Q4_1 grid (as a GGUF-sourced base's do)."""
    tmp = tmp_path_factory.mktemp("int4_base")
    model = snap_to_q4_1(AutoModelForCausalLM.from_pretrained(build_tiny("llama", tmp / "raw"), dtype=torch.float32))
    model.save_pretrained(tmp / "grid")
    return tmp / "grid"


@pytest.mark.parametrize("weights, dtype, tol", [("int4", torch.bfloat16, 0.05), ("int8", torch.float32, 0.05)])
def test_adapter_served_over_packed_base_weights(grid_base, tmp_path, weights, dtype, tol):
    if weights == "int4" and not int4_kernel_available():
        pytest.skip("no CPU int4 kernel in this torch")
    if weights == "int8" and torch.backends.quantized.engine not in ("x86", "fbgemm"):
        pytest.skip("int8 weights need fbgemm")
    base = AutoModelForCausalLM.from_pretrained(grid_base, dtype=torch.float32)
    w = read_weights(base, dtype=dtype, weights=weights)
    down = w.blocks[0].down
    assert down.w is None and (down.int4 is not None or down.packed is not None)  # no dense matrix to read
    torch.manual_seed(0)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(grid_base, dtype=torch.float32),
                          LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    attach(w, "run", read_adapter("run", tmp_path / "adapter", w))
    engine = DecodeEngine(w, 256)
    ids = torch.randint(0, peft.config.vocab_size, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = peft(ids).logits[0, -1]
    got = engine.prefill(ids.tolist(), engine.new_cache(1, 32), route=[("run", None)])[0].float()
    plain = engine.prefill(ids.tolist(), engine.new_cache(1, 32))[0].float()
    span = want.max() - want.min()
    assert (got - want).abs().max() <= tol * span  # packed base weights: within a few % of the logit range
    assert (plain - want).abs().max() > 2 * (got - want).abs().max()  # the adapter is what brings it there
