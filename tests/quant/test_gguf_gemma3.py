"""A Gemma 3 GGUF trained as stored (quant/gguf_load.py's "gemma3" entry): a tiny gemma3 written as
GGUF by gguf-py (Q5_0, Q5_1 and Q8_0 Linears; norms stored as 1 + w, as convert_hf_to_gguf writes them)
builds with every Linear kept in its blocks and gives the logits of the transformers model whose
Linear weights are gguf.quants.dequantize of the same blocks; one LoRA step on it moves the adapter
and never the blocks."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from gguf import quants

from tunelab.quant.gguf_linear import GGUFBlockLinear

MIX = {"attn_q": T.Q5_0, "attn_k": T.Q5_0, "attn_v": T.Q8_0, "attn_output": T.Q5_1,
       "ffn_gate": T.Q5_0, "ffn_up": T.Q5_1, "ffn_down": T.Q8_0}  # a Q4_K_M-like mix (no K-quant: cols < 256)


@pytest.fixture(scope="module")
def tiny_gemma3_gguf(tmp_path_factory):
    """(GGUF path, HF config, reference model with the dequantized Linears)."""
    from transformers import AutoModelForCausalLM

    from tunelab.models.families import build_tiny

    tmp = tmp_path_factory.mktemp("g3")
    folder = build_tiny("gemma3", tmp / "tiny-gemma3")
    ref = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    cfg = ref.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, cfg.num_hidden_layers)
    path = tmp / "tiny-gemma3.gguf"
    w = gguf.GGUFWriter(str(path), "gemma3")
    for hf, t in ref.state_dict().items():
        if hf == "lm_head.weight":
            continue  # tied
        name = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        kind = name.split(".")[2] if name.startswith("blk.") else name
        a = t.detach().numpy().astype(np.float32)
        if kind in MIX:
            raw = quants.quantize(a, MIX[kind])
            w.add_tensor(name, raw, raw_dtype=MIX[kind])
            t.copy_(torch.from_numpy(quants.dequantize(raw, MIX[kind])))  # the reference runs on the same weights
        elif name.endswith("norm.weight"):
            w.add_tensor(name, a + 1.0)  # Gemma's (1 + w) RMSNorm is stored as 1 + w
        else:
            w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, cfg, ref


def test_gemma3_blocks_kept_give_the_dequantized_logits(tiny_gemma3_gguf):
    from tunelab.quant.gguf_file import read_gguf
    from tunelab.quant.gguf_load import build_model, why_not_blocks

    path, cfg, ref = tiny_gemma3_gguf
    assert why_not_blocks(read_gguf(path)) is None
    model = build_model(path, cfg)
    kept = [m for m in model.modules() if isinstance(m, GGUFBlockLinear)]
    assert len(kept) == 7 * cfg.num_hidden_layers and {m.fmt for m in kept} == {"q5_0", "q5_1", "q8_0"}
    ids = torch.randint(0, cfg.vocab_size, (2, 37), generator=torch.Generator().manual_seed(0))  # > the window
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, rtol=1e-5, atol=1e-5)
    norm = model.model.layers[0].input_layernorm.weight
    torch.testing.assert_close(norm, ref.model.layers[0].input_layernorm.weight, rtol=0, atol=1e-6)  # 1 + w stored


def test_gemma3_lora_step_on_blocks_moves_only_the_adapter(tiny_gemma3_gguf):
    from tunelab.adapters.lora import apply_lora, lora_state
    from tunelab.config import from_dict
    from tunelab.quant.gguf_load import build_model

    path, cfg, _ = tiny_gemma3_gguf
    model = build_model(path, cfg)
    kept = [(m, m.qs.clone()) for m in model.modules() if isinstance(m, GGUFBlockLinear)]
    run = from_dict({"model": {"name": str(path)}, "data": {"train": "x.jsonl"},
                     "method": {"name": "qlora", "r": 4, "layers": "all"}})
    model = apply_lora(model, run.method)
    before = lora_state(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, cfg.vocab_size, (1, 12), generator=torch.Generator().manual_seed(1))
    for _ in range(2):  # lora_B starts at zero: the second step moves lora_A too
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    after = lora_state(model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("lora_B" in k for k in changed) and any("lora_A" in k for k in changed)
    assert all(torch.equal(m.qs, qs) for m, qs in kept)
