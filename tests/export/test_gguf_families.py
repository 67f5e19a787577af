"""GGUF export of every family (`tunelab.export.gguf_arches`): each tiny model's f16 file reloads in
transformers' GGUF loader with the source model's logits, its keys and tensor names are llama.cpp's,
q8_0 stays within its format's error on a non-Llama family, the LoRA adapter file names the tensors
llama.cpp's --lora looks up, and what a GGUF cannot express is refused in one line or capped and noted.

Where transformers' GGUF loader reads less than the file says (it keeps its config defaults for
query_pre_attn_scalar, Qwen 3's head_dim, and it ignores rope_freqs), the reload is given that value
explicitly and the test asserts the file carries what llama.cpp reads instead (key_length, rope_freqs).
transformers has no olmo2 GGUF loader: olmo2's file is read back by llama.cpp's tensor names.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.models.families import FAMILIES

SEQ = 24  # longer than the tiny models' sliding windows (16)


def _write_config(model_dir: Path, **changes) -> None:
    path = model_dir / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def _build(root: Path, name: str) -> Path:
    """tiny-<name> in root/<name>/model (general.name "model": transformers' loader re-labels a llama file
    whose name contains "mistral" as a model type its own tensor map does not know). gemma3: its tiny model
    has 6 layers in Gemma 3's pattern, every 6th global, which llama.cpp's graph fixes (another pattern is
    refused: test below)."""
    from tunelab.models.families import build_tiny

    return build_tiny(name, root / name / "model")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: _build(root, name) for name in FAMILIES}


@pytest.fixture(scope="module")
def f16(tiny):
    from tunelab.export.gguf import write_gguf

    return {name: write_gguf(src, src.parent / f"{name}-f16.gguf", "f16") for name, src in tiny.items()}


def _cfg(src: Path) -> dict:
    return json.loads((src / "config.json").read_text())


# what transformers' GGUF loader does not read from the file (config defaults instead), per family
LOADER_GAPS = {
    "llama3": lambda c: {"rope_parameters": c["rope_parameters"]},  # rope_freqs is not read
    "qwen3": lambda c: {"head_dim": c["head_dim"]},  # attention.key_length is not read for qwen3
    "gemma2": lambda c: {"query_pre_attn_scalar": c["query_pre_attn_scalar"]},  # llama.cpp: 1/sqrt(key_length)
    "gemma3": lambda c: {"query_pre_attn_scalar": c["query_pre_attn_scalar"]},
}


def _by_names(info, src: Path):
    """The source architecture with every tensor taken from the GGUF by llama.cpp's name for it."""
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunelab.export.gguf import arch_of, tensor_name_map

    cfg = _cfg(src)
    names = tensor_name_map(arch_of(cfg), cfg["num_hidden_layers"])
    tensors = {t.name: torch.from_numpy(np.array(t.data, dtype=np.float32)) for t in GGUFReader(info.path).tensors}
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src), dtype=torch.float32).eval()
    sd = {}
    for key, value in model.state_dict().items():
        gname = "output.weight" if key == "lm_head.weight" else names.get_name(key, try_suffixes=(".weight", ".bias"))
        sd[key] = tensors[gname].reshape(value.shape)
    model.load_state_dict(sd)
    return model


def _reload(name: str, info, src: Path):
    from transformers import AutoModelForCausalLM

    if name == "olmo2":
        return _by_names(info, src)
    extra = LOADER_GAPS.get(name, lambda c: {})(_cfg(src))
    return AutoModelForCausalLM.from_pretrained(info.path.parent, gguf_file=info.path.name, dtype=torch.float32,
                                                **extra).eval()


def _logits(model, n: int):
    ids = torch.randint(5, 400, (2, n), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_f16_reloads_with_the_source_logits(name, tiny, f16):
    from transformers import AutoModelForCausalLM

    src, info = tiny[name], f16[name]
    ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    got = _reload(name, info, src)
    n = min(SEQ, json.loads((src / "config.json").read_text())["max_position_embeddings"], _context(info))
    a, b = _logits(ref, n), _logits(got, n)
    assert (a - b).abs().max().item() < 0.05, name  # fp16 weights: ~1e-3 relative
    assert torch.equal(a.argmax(-1), b.argmax(-1)), name


def _fields(path):
    from gguf import GGUFReader

    r = GGUFReader(path)
    return ({k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.ggml.")},
            {t.name: (tuple(int(x) for x in t.shape), t.tensor_type.name, t) for t in r.tensors})


def _context(info) -> int:
    fields, _ = _fields(info.path)
    return fields[f"{info.arch}.context_length"]


def _llama_cpp_names(arch: str, n_layers: int) -> set[str]:
    """Every tensor name llama.cpp's gguf-py lists for `arch`, as `<name>.weight` / `.bias`."""
    import gguf

    kind = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    out = set()
    for t in gguf.MODEL_TENSORS[kind]:
        for i in range(n_layers):
            out |= {gguf.TENSOR_NAMES[t].format(bid=i) + s for s in (".weight", ".bias")}
    return out


@pytest.mark.parametrize("name", list(FAMILIES))
def test_tensor_names_are_llama_cpps(name, tiny, f16):
    cfg = _cfg(tiny[name])
    _, tensors = _fields(f16[name].path)
    assert set(tensors) <= _llama_cpp_names(f16[name].arch, cfg["num_hidden_layers"]), name
    must = {"token_embd.weight", "output_norm.weight", "blk.0.attn_output.weight", "blk.0.ffn_down.weight"}
    assert must <= set(tensors)


def test_gemma3_keys_norm_shift_and_names(tiny, f16):
    """Gemma3Model's keys; every norm (incl. the q/k norms) is stored as 1 + w; tied: no output.weight."""
    from safetensors.torch import load_file

    cfg = _cfg(tiny["gemma3"])
    f, tensors = _fields(f16["gemma3"].path)
    assert f["general.architecture"] == "gemma3" and f16["gemma3"].notes == ()
    assert f["gemma3.context_length"] == cfg["max_position_embeddings"]
    assert f["gemma3.attention.sliding_window"] == 16
    assert f["gemma3.attention.key_length"] == f["gemma3.attention.value_length"] == cfg["head_dim"]
    assert f["gemma3.rope.freq_base"] == pytest.approx(cfg["rope_parameters"]["full_attention"]["rope_theta"])
    assert f["gemma3.attention.head_count_kv"] == cfg["num_key_value_heads"]
    assert "gemma3.final_logit_softcapping" not in f and "gemma3.attn_logit_softcapping" not in f
    blk = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm", "attn_k_norm",
           "post_attention_norm", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down", "post_ffw_norm"}
    assert set(tensors) == {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{n}.weight" for i in range(cfg["num_hidden_layers"]) for n in blk}
    hf = load_file(str(tiny["gemma3"] / "model.safetensors"))
    for hf_name, gname in (("model.layers.0.self_attn.q_norm.weight", "blk.0.attn_q_norm.weight"),
                           ("model.layers.0.post_feedforward_layernorm.weight", "blk.0.post_ffw_norm.weight"),
                           ("model.norm.weight", "output_norm.weight")):
        np.testing.assert_allclose(np.array(tensors[gname][2].data), hf[hf_name].numpy() + 1, rtol=1e-6)


def test_gemma2_phi3_qwen3_olmo2_keys(tiny, f16):
    f, t = _fields(f16["gemma2"].path)
    assert f["gemma2.attn_logit_softcapping"] == pytest.approx(50.0)
    assert f["gemma2.final_logit_softcapping"] == pytest.approx(30.0)
    assert f["gemma2.attention.sliding_window"] == 16
    cfg = _cfg(tiny["phi3"])
    f, t = _fields(f16["phi3"].path)
    hd, n_kv = cfg["hidden_size"] // cfg["num_attention_heads"], cfg["num_key_value_heads"]
    # fused, as llama.cpp keeps them: ggml shape (in, out) = reversed numpy shape
    assert t["blk.0.attn_qkv.weight"][0] == (cfg["hidden_size"], cfg["hidden_size"] + 2 * n_kv * hd)
    assert t["blk.0.ffn_up.weight"][0] == (cfg["hidden_size"], 2 * cfg["intermediate_size"])
    assert "blk.0.attn_q.weight" not in t and "blk.0.ffn_gate.weight" not in t
    assert f["phi3.rope.scaling.original_context_length"] == cfg["original_max_position_embeddings"]
    assert f["phi3.attention.sliding_window"] == 0 and f["phi3.rope.dimension_count"] == hd
    f, t = _fields(f16["qwen3"].path)
    assert f["qwen3.attention.key_length"] == 16 and t["blk.1.attn_k_norm.weight"][0] == (16,)
    f, t = _fields(f16["olmo2"].path)
    assert f["general.architecture"] == "olmo2"
    assert {"blk.0.attn_q_norm.weight", "blk.0.post_attention_norm.weight", "blk.0.post_ffw_norm.weight",
            "output.weight"} <= set(t) and "blk.0.attn_norm.weight" not in t


def test_llama3_rope_freqs_are_transformers_llama3_frequencies(tiny, f16):
    """llama.cpp divides each base frequency by rope_freqs[i]; transformers' llama3 rope gives the
    scaled inverse frequencies directly: base / rope_freqs == transformers' inv_freq."""
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = AutoConfig.from_pretrained(tiny["llama3"])
    _, t = _fields(f16["llama3"].path)
    freqs = np.array(t["rope_freqs.weight"][2].data)
    inv, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    d = cfg.head_dim
    base = 1.0 / (cfg.rope_parameters["rope_theta"] ** (np.arange(0, d, 2) / d))
    np.testing.assert_allclose(base / freqs, inv.numpy(), rtol=1e-5)
    assert freqs.min() == 1.0 and freqs.max() == pytest.approx(8.0)  # both ends of the ramp are exercised


def test_mistral_sliding_window_caps_the_context_with_a_note(tiny, f16):
    """llama.cpp runs Mistral as "llama", which has no sliding window: the file declares the window as
    its context, where full attention is the window's attention, and says so."""
    info = f16["mistral"]
    f, _ = _fields(info.path)
    assert f["general.architecture"] == "llama" and f["llama.context_length"] == 16
    assert len(info.notes) == 1 and "sliding window 16" in info.notes[0] and "\n" not in info.notes[0]
    assert all(not f16[n].notes for n in FAMILIES if n != "mistral")


def test_q8_0_on_gemma3_and_phi3(tiny, tmp_path):
    """Q8_0 through the norm shift and the fused tensors: every matrix, as reloaded, is the source
    matrix rounded through Q8_0 (gguf-py's encoder and decoder), so within d/2 = amax/254 (+ the fp16
    rounding of d) per 32-weight block; norms (F32) exact up to the +1 / -1 round trip. (Greedy tokens
    of a random 0.1M-param model are near ties: the logits are checked against a bound instead.)"""
    from gguf import GGMLQuantizationType, quants
    from transformers import AutoModelForCausalLM

    from tunelab.export.gguf import write_gguf

    for name in ("gemma3", "phi3"):
        info = write_gguf(tiny[name], tmp_path / f"{name}-q8.gguf", "q8_0")
        _, t = _fields(info.path)
        assert t["blk.0.ffn_down.weight"][1] == "Q8_0" and t["output_norm.weight"][1] == "F32"
        ref = AutoModelForCausalLM.from_pretrained(tiny[name], dtype=torch.float32).eval()
        got = _reload(name, info, tiny[name])
        sd = got.state_dict()
        for k, v in ref.state_dict().items():
            if v.ndim != 2:
                torch.testing.assert_close(sd[k], v, rtol=0, atol=1e-6)
                continue
            q8 = quants.dequantize(quants.quantize(v.numpy(), GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0)
            np.testing.assert_array_equal(sd[k].numpy(), q8.reshape(v.shape), err_msg=f"{name} {k}")
            x, y = v.reshape(-1, 32), sd[k].reshape(-1, 32)
            amax = x.abs().amax(1, keepdim=True)
            assert ((x - y).abs() <= amax / 254 + amax * 2.0 ** -11 + 1e-7).all(), (name, k)
        a, b = _logits(ref, SEQ), _logits(got, SEQ)
        assert (a - b).abs().max().item() < 0.25, name


def test_a_resaved_qwen2_tokenizer_is_named_by_its_split_regex(tiny, tmp_path):
    """transformers saves a loaded Qwen2Tokenizer with its splitter spelled out (Split(regex) + ByteLevel
    without regex), as a merged run's folder has it: the probe hash of the tiny vocabulary is unknown,
    the regex is llama.cpp's "qwen2" one, and the reloaded tokenizer encodes as the folder's does."""
    import shutil

    from transformers import AutoTokenizer

    from tunelab.export.gguf import write_gguf

    src = shutil.copytree(tiny["qwen2"], tmp_path / "model")
    AutoTokenizer.from_pretrained(src).save_pretrained(src)
    pre = json.loads((src / "tokenizer.json").read_text())["pre_tokenizer"]
    assert pre["type"] == "Sequence" and pre["pretokenizers"][0]["type"] == "Split"
    info = write_gguf(src, tmp_path / "q.gguf", "f32")
    from gguf import GGUFReader

    assert GGUFReader(info.path).fields["tokenizer.ggml.pre"].contents() == "qwen2"
    ref = AutoTokenizer.from_pretrained(src)
    got = AutoTokenizer.from_pretrained(info.path.parent, gguf_file=info.path.name)
    for t in ["Hello world, how are you? 12345 67", "  spaces\n\n tabs\t end", "naïve café — 3.14 🚀",
              "<|im_start|>user\nhi<|im_end|>\n", "I've 'RE 'll"]:
        assert got(t)["input_ids"] == ref(t)["input_ids"], t


# ---- LoRA adapters ---------------------------------------------------------------------------------------------------
def _peft_adapter(src: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    peft.save_pretrained(out)
    return out


@pytest.mark.parametrize("name", list(FAMILIES))
def test_lora_adapter_names_and_shapes(name, tiny, tmp_path):
    from gguf import GGUFReader
    from safetensors.torch import load_file

    from tunelab.export.gguf import arch_of, tensor_name_map, unpermute_qk
    from tunelab.export.lora_gguf import write_adapter_gguf

    src = tiny[name]
    cfg = _cfg(src)
    adapter = _peft_adapter(src, tmp_path / "adapter")
    info = write_adapter_gguf(adapter, cfg, tmp_path / "a.gguf", "test")
    arch = arch_of(cfg)
    r = GGUFReader(info.path)
    assert r.fields["general.architecture"].contents() == info.arch == arch.gguf
    assert r.fields["general.type"].contents() == "adapter"
    got = {t.name: np.array(t.data) for t in r.tensors}
    names = tensor_name_map(arch, cfg["num_hidden_layers"])
    peft = load_file(str(adapter / "adapter_model.safetensors"))
    want = set()
    for key, a in peft.items():
        if ".lora_A." not in key:
            continue
        module = key.removeprefix("base_model.model.").split(".lora_A.")[0]
        gname = names.get_name(module + ".weight", try_suffixes=(".weight",))
        want |= {f"{gname}.lora_a", f"{gname}.lora_b"}
        b = peft[key.replace(".lora_A.", ".lora_B.")].numpy()
        assert got[f"{gname}.lora_a"].shape == a.shape and got[f"{gname}.lora_b"].shape == b.shape, gname
        gb = got[f"{gname}.lora_b"]
        if arch.permute_qk and ".attn_q." in gname:
            gb = unpermute_qk(gb, cfg["num_attention_heads"])
        elif arch.permute_qk and ".attn_k." in gname:
            gb = unpermute_qk(gb, cfg["num_key_value_heads"])
        np.testing.assert_array_equal(gb, b)
        np.testing.assert_array_equal(got[f"{gname}.lora_a"], a.numpy())
    assert set(got) == want and "blk.1.attn_output.weight.lora_a" in want
    assert ("blk.0.attn_qkv.weight.lora_a" in want) == (name == "phi3")
    assert ("blk.0.attn_q.weight.lora_b" in want) == (name != "phi3")


# ---- refusals --------------------------------------------------------------------------------------------------------
def _one_line(exc: pytest.ExceptionInfo, *words: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and all(w in text for w in words), text


def test_refusals_are_one_line_and_name_the_architecture(tiny, tmp_path):
    import shutil

    from tunelab.export.gguf import write_gguf
    from tunelab.models.families import build_tiny

    out = tmp_path / "m.gguf"
    bad = shutil.copytree(tiny["llama"], tmp_path / "gpt2")
    _write_config(bad, architectures=["GPT2LMHeadModel"], model_type="gpt2")
    with pytest.raises(TunelabError) as e:
        write_gguf(bad, out)
    _one_line(e, "GPT2LMHeadModel", "not supported for GGUF")
    # a 2-layer Gemma 3 with layer 1 global, where llama.cpp's fixed pattern has a sliding layer with
    # the local rope base (10000 vs 1e6): wrong at every position, so refused rather than capped
    two = build_tiny("gemma3", tmp_path / "g2", layers=2)
    _write_config(two, layer_types=["sliding_attention", "full_attention"])
    with pytest.raises(TunelabError) as e:
        write_gguf(two, out)
    _one_line(e, "gemma3", "layer 1", "cannot express")
    other = shutil.copytree(tiny["gemma3"], tmp_path / "g3")
    cfg = _cfg(other)
    cfg["rope_parameters"]["sliding_attention"]["rope_theta"] = 20000.0
    _write_config(other, rope_parameters=cfg["rope_parameters"])
    with pytest.raises(TunelabError) as e:
        write_gguf(other, out)
    _one_line(e, "gemma3", "local rope base 20000")
    g2 = shutil.copytree(tiny["gemma2"], tmp_path / "g2b")
    _write_config(g2, query_pre_attn_scalar=256)
    with pytest.raises(TunelabError) as e:
        write_gguf(g2, out)
    _one_line(e, "gemma2", "query_pre_attn_scalar 256")
    assert not out.exists()


# ---- slow: the real Gemma 3 270M ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_gemma3_f16_reloads_with_the_same_tokens_and_greedy_tokens(tmp_path):
    """Gemma 3 270M (alias gemma3-270m, 262k sentencepiece-style vocabulary): the f16 GGUF reloads in
    transformers' GGUF loader with the same tokenization and the same 24 greedy tokens as the model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.export.gguf import write_gguf
    from tunelab.models.registry import resolve

    try:
        src = Path(resolve("gemma3-270m").path)
    except TunelabError:
        pytest.skip("gemma3-270m is not installed")
    if not (src / "DONE").is_file():
        pytest.skip("gemma3-270m is not installed")
    info = write_gguf(src, tmp_path / "gemma3-270m-f16.gguf", "f16")
    assert info.arch == "gemma3" and info.notes == ()
    f, _ = _fields(info.path)
    assert f["general.architecture"] == "gemma3" and f["gemma3.attention.sliding_window"] == 512
    ref_tok = AutoTokenizer.from_pretrained(src)
    got_tok = AutoTokenizer.from_pretrained(info.path.parent, gguf_file=info.path.name)
    texts = ["Hello world, how are you?", "  spaces\n\n tabs\t end", "naïve café — 3.14 🚀", "日本語",
             "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n", "<table><tr><td>x</td></tr></table>"]
    for t in texts:
        assert got_tok(t)["input_ids"] == ref_tok(t)["input_ids"], t
    ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    got = AutoModelForCausalLM.from_pretrained(info.path.parent, gguf_file=info.path.name, dtype=torch.float32).eval()
    for prompt in ["The capital of France is", "def fibonacci(n):"]:
        ids = ref_tok(prompt, return_tensors="pt")["input_ids"]
        a = ref.generate(ids, max_new_tokens=24, do_sample=False)[0].tolist()
        b = got.generate(ids, max_new_tokens=24, do_sample=False)[0].tolist()
        assert a == b, (prompt, ref_tok.decode(a), ref_tok.decode(b))
