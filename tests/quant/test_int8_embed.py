"""Embeddings and output head as frozen int8 rows (tunelab.quant.int8_rows) and the streamed load with them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunelab.quant.integer import quantize_symmetric
from tunelab.quant.int8_rows import Int8Embedding, Int8Head, decode_rows, quantize_rows
from tunelab.quant.stream_load import model_bytes, stream_quantized


def _weight(v: int = 300, d: int = 48, seed: int = 0) -> torch.Tensor:
    w = torch.randn(v, d, generator=torch.Generator().manual_seed(seed)) * torch.linspace(0.01, 2.0, v)[:, None]
    w[7] = 0.0  # an all-zero row decodes to zeros
    return w


def test_rows_are_quantize_symmetric_per_channel_and_within_half_a_step():
    w = _weight().to(torch.bfloat16)
    q, s = quantize_rows(w, chunk=64)  # chunked: 300 rows in 5 chunks, the last one short
    ref = quantize_symmetric(w, 8, "channel")
    assert q.dtype == torch.int8 and torch.equal(q, ref.q) and torch.equal(s, ref.scale)
    err = (decode_rows(q, s) - w.float()).abs()
    assert torch.all(err <= s[:, None] / 2 + 1e-7)  # |W' - W| <= s / 2 per row
    assert torch.all(decode_rows(q, s)[7] == 0)


def test_embedding_gathers_and_decodes_rows():
    w = _weight()
    emb = Int8Embedding.from_weight(w)
    ids = torch.tensor([[0, 7, 299, 5], [5, 5, 1, 2]])
    out = emb(ids)
    assert out.shape == (2, 4, 48) and out.dtype == torch.float32
    assert torch.equal(out, emb.dequantize_weight()[ids])  # the gathered rows of W'
    torch.testing.assert_close(out, F.embedding(ids, w), atol=float(emb.scale.max()) / 2, rtol=0)
    assert emb.qweight.nbytes + emb.scale.nbytes == 300 * 48 + 4 * 300  # V d + 4 V bytes
    assert not list(emb.parameters())


def test_head_product_and_input_gradient_match_the_decoded_weight():
    w = _weight()
    head = Int8Head.from_weight(w, chunk=64)  # 300 rows: 5 chunks
    wq = head.dequantize_weight()
    h = torch.randn(2, 5, 48, generator=torch.Generator().manual_seed(1), requires_grad=True)
    z = head(h)
    ref_h = h.detach().clone().requires_grad_(True)
    ref = F.linear(ref_h, wq)
    torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(z)
    z.backward(g)
    ref.backward(g)
    torch.testing.assert_close(h.grad, ref_h.grad, rtol=1e-5, atol=1e-5)
    # against the fp32 head: the int8 rows' error only (half a step per weight)
    bound = (h.detach().abs().sum(-1, keepdim=True) * head.scale[None, None, :] / 2) + 1e-5
    assert torch.all((z.detach() - F.linear(h.detach(), w)).abs() <= bound)
    with torch.no_grad():
        assert torch.equal(head(h), z.detach())


def test_head_under_bf16_autocast_computes_in_bf16():
    head = Int8Head.from_weight(_weight(), chunk=128)
    h = torch.randn(3, 48, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = head(h)
    assert z.dtype == torch.bfloat16
    wq = head.dequantize_weight()
    # x, W' and the product each rounded to bf16 (unit roundoff 2**-8): |error| <= 3 x 2**-8 x |h| |W'|^T
    bound = 3 * 2**-8 * F.linear(h.abs(), wq.abs()) + 1e-6
    assert torch.all((z.float() - F.linear(h, wq)).abs() <= bound)


def test_tied_head_reads_the_embedding_buffers():
    emb = Int8Embedding.from_weight(_weight())
    head = Int8Head.tied(emb)
    assert head.rows()[0] is emb.qweight and not list(head.buffers())  # one int8 copy, one state_dict entry
    torch.testing.assert_close(head(torch.eye(48)[:2]), emb.dequantize_weight()[:, :2].t())


@pytest.fixture(scope="module")
def untied(tmp_path_factory):
    """A small Llama with its own head (tie_word_embeddings false), saved as safetensors."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=640, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    path = tmp_path_factory.mktemp("untied") / "m"
    LlamaForCausalLM(cfg).save_pretrained(str(path), safe_serialization=True)
    return path


@pytest.mark.parametrize("which", ["tied", "untied"])
def test_streamed_load_with_int8_rows(which, tiny_model_dir, untied):
    path = tiny_model_dir if which == "tied" else untied
    plain = stream_quantized(path)
    small = stream_quantized(path, int8_rows=True)
    assert isinstance(small.get_input_embeddings(), Int8Embedding)
    assert isinstance(small.get_output_embeddings(), Int8Head)
    tied = bool(small.config.tie_word_embeddings)
    assert tied == (which == "tied") and bool(small.get_output_embeddings()._tied) == tied
    v, d = plain.get_input_embeddings().weight.shape
    matrices = 1 if tied else 2
    assert model_bytes(plain) - model_bytes(small) == matrices * (4 * v * d - (v * d + 4 * v))
    # the block Linears are the same codes; the embeddings and head are the fp32 ones within int8 rounding
    a, b = plain.state_dict(), small.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if "layers." in k)
    emb = small.get_input_embeddings()
    w = plain.get_input_embeddings().weight
    assert torch.all((emb.dequantize_weight() - w).abs() <= emb.scale[:, None] / 2 + 1e-7)
    ids = torch.randint(0, min(v, 500), (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        la, lb = plain(ids).logits, small(ids).logits
    assert (la - lb).abs().max() < 0.05 * la.abs().max()


def test_a_training_step_on_int8_rows_changes_the_adapter(tiny_model_dir):
    from tunelab.adapters.lora import apply_lora
    from tunelab.adapters.qlora import freeze_quantized_base
    from tunelab.config import MethodConfig
    from tunelab.losses import reply_loss_sum
    from tunelab.train.activation_ckpt import enable

    model = freeze_quantized_base(stream_quantized(tiny_model_dir, int8_rows=True))
    model = apply_lora(model, MethodConfig(name="qlora", r=4, layers="all"))
    enable(model)  # checkpointing: the embeddings' output is made to require grad
    lora_b = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n}
    ids = torch.randint(0, 200, (1, 16), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    loss, n = reply_loss_sum(model, ids, torch.ones_like(ids), ids.clone())
    (loss / n).backward()
    opt.step()
    after = dict(model.named_parameters())
    assert lora_b and all(torch.any(after[k] != v) for k, v in lora_b.items())
    assert torch.isfinite(loss)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def test_method_option_streams_int8_rows(tiny_model_dir):
    from tunelab.config import from_dict
    from tunelab.train.recipes._common import load_base

    cfg = from_dict({"model": {"name": str(tiny_model_dir), "device": "cpu"}, "data": {"train": "unused.jsonl"},
                     "method": {"name": "qlora", "quant_backend": "tunelab", "embed_quant": "int8"}})
    base = load_base(cfg)
    assert base.quantized and isinstance(base.model.get_input_embeddings(), Int8Embedding)
