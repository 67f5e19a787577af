"""qlora's stored base in the memory estimate: GGUF block types at their real bits, int8 embeddings and head."""

from __future__ import annotations

import pytest

from tunelab.memory.base_layout import ggml_bits, gguf_mix, mix_bits
from tunelab.memory.estimator import estimate
from tunelab.memory.shape import ModelShape
from tunelab.methods.qlora import QLORA_BITS
from tunelab.models.synthetic import llama_config

LLAMA2_7B = dict(llama_config("7b"), model_type="llama")


@pytest.mark.parametrize("t,bits", [("Q4_0", 4.5), ("Q4_1", 5.0), ("Q8_0", 8.5), ("Q4_K", 4.5), ("Q6_K", 6.5625),
                                    ("Q5_K", 5.5), ("Q2_K", 2.625), ("F16", 16.0)])
def test_ggml_bits_are_block_bytes_over_block_weights(t, bits):
    assert ggml_bits(t) == bits


def test_an_unknown_type_is_one_clear_error():
    from tunelab.errors import TunelabError

    with pytest.raises(TunelabError, match="unknown GGML type"):
        ggml_bits("Q9_9")


def test_a_gguf_base_is_priced_at_its_types_bits():
    s = ModelShape.from_config(LLAMA2_7B)
    nf4 = estimate(LLAMA2_7B, "qlora", device="cpu", detect=False)
    for base, bits in [("Q4_K", 4.5), ("Q6_K", 6.5625), ({"Q4_K": 3, "Q6_K": 1}, (3 * 4.5 + 6.5625) / 4)]:
        e = estimate(LLAMA2_7B, "qlora", device="cpu", detect=False, base=base)
        assert e.weights - nf4.weights == int(s.linear_params * bits / 8) - int(s.linear_params * QLORA_BITS / 8)
        assert "GGUF" in e.rows[0][2]
    assert mix_bits({"Q4_K": 3, "Q6_K": 1}).label == "GGUF Q4_K 75% + Q6_K 25%"


def test_the_mix_is_read_from_the_gguf_file(tiny_model_dir, tmp_path):
    """A tiny GGUF written by tunelab's exporter: the mix is its block Linears' types, as gguf's reader sees them."""
    from gguf import GGUFReader

    from tunelab.export.gguf import write_gguf

    path = tmp_path / "tiny-q8_0.gguf"
    write_gguf(tiny_model_dir, path, "q8_0")
    want: dict[str, int] = {}
    for t in GGUFReader(str(path)).tensors:
        parts = t.name.split(".")
        if parts[0] == "blk" and parts[2] in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                                               "ffn_down"):
            want[t.tensor_type.name] = want.get(t.tensor_type.name, 0) + int(t.n_elements)
    assert want and gguf_mix(path) == want
    e = estimate(str(tiny_model_dir), "qlora", device="cpu", detect=False, base=str(path))
    s = ModelShape.from_config(__import__("json").loads((tiny_model_dir / "config.json").read_text()))
    assert e.weights == int(s.linear_params * mix_bits(want).bits / 8) + (s.params - s.linear_params) * 4


def test_int8_embeddings_and_head_rows():
    s = ModelShape.from_config(LLAMA2_7B)
    kw = dict(batch=1, seq=256, grad_checkpointing=True, r=16, device="cpu", detect=False, autocast=False)
    fp32 = estimate(LLAMA2_7B, "qlora", **kw)
    int8 = estimate(LLAMA2_7B, "qlora", embed_quant="int8", **kw)
    # two V x h matrices (untied): 4 V h -> V h + 4 V bytes each
    assert fp32.weights - int8.weights == 2 * (4 * s.vocab * s.hidden - (s.vocab * s.hidden + 4 * s.vocab))
    rows = {name: n for name, n, _ in int8.rows}
    assert rows["log-softmax (kept)"] == 256 * s.vocab * 4  # plain cross-entropy keeps P x V x 4
    assert "loss gradient (kept)" not in rows
    assert 0.7e9 < fp32.total - int8.total < 0.8e9


def test_decode_row_is_codes_and_values_in_place():
    e = estimate(LLAMA2_7B, "qlora", device="cpu", detect=False, autocast=False)
    big = 4096 * 11008
    assert dict((n, b) for n, b, _ in e.rows)["4-bit decode (transient)"] == big * (2 + 4)


def test_unknown_embed_quant_is_refused():
    from tunelab.errors import TunelabError

    with pytest.raises(TunelabError, match="embed_quant"):
        estimate(LLAMA2_7B, "qlora", detect=False, embed_quant="int4")
