"""The architecture matrix, export side: per family, `tunelab export --to gguf --quant f16` reloaded by
transformers' GGUF loader with the run's logits (or the one-line refusal), `--to lora-gguf` holding the
adapter's A/B pairs, and `--to ollama --check` rendering the probe conversations as the run's template
does (export/ollama.check_modelfile). See test_matrix_expected.py."""

from __future__ import annotations

import pytest
import torch
from test_matrix_expected import NAMES, cli, expect, matrix_runs, outcome_of  # noqa: F401 (fixture)

F16_TOL = 0.05  # logits of a tiny random model after f16 rounding of every weight (tests/export/test_gguf.py)


def _ids():
    return torch.randint(5, 400, (2, 24), generator=torch.Generator().manual_seed(0))


CONFIG_KEYS = ("rope_scaling", "rope_parameters", "rope_theta", "sliding_window", "layer_types", "head_dim",
               "final_logit_softcapping", "attn_logit_softcapping", "query_pre_attn_scalar", "tie_word_embeddings")


def _config_diff(ref, got) -> str:
    """The first config fields (of CONFIG_KEYS) the reloaded model has otherwise: what its forward
    would compute differently."""
    def short(v) -> str:  # a rope dict by its type
        return repr(v.get("rope_type", v) if isinstance(v, dict) else v)[:40]

    diff = [f"{k} {short(getattr(got, k, None))} (trained {short(getattr(ref, k, None))})" for k in CONFIG_KEYS
            if getattr(ref, k, None) != getattr(got, k, None)]
    return "; ".join(diff) or "no config field differs"


def _file_facts(path) -> tuple[dict, dict]:
    """(the GGUF's metadata {key: value}, its tensors {name: numpy array}) as llama.cpp reads them."""
    import numpy as np
    from gguf import GGUFReader

    r = GGUFReader(path)
    meta = {}
    for f in r.fields.values():
        if f.types and f.data and len(f.data) == 1 and f.name.count(".") >= 1:
            v = f.parts[f.data[0]]
            meta[f.name] = v.tolist()[0] if getattr(v, "size", 0) == 1 else v
    return meta, {t.name: np.array(t.data) for t in r.tensors}


def _loader_gaps(meta: dict, tensors: dict) -> dict:
    """Config values transformers' GGUF loader does not read from the file (it keeps its defaults), taken
    from the file's own keys, as llama.cpp reads them: the key length is qwen3's head_dim, and Gemma's
    attention scale is 1/sqrt(key_length) in llama.cpp (query_pre_attn_scalar = key_length)."""
    arch = bytes(meta["general.architecture"]).decode() if not isinstance(meta["general.architecture"], str) \
        else meta["general.architecture"]
    key_length = meta.get(f"{arch}.attention.key_length")
    return {"qwen3": {"head_dim": key_length},
            "gemma2": {"query_pre_attn_scalar": key_length},
            "gemma3": {"query_pre_attn_scalar": key_length}}.get(arch, {})


def _check_gguf(run, out) -> None:
    """The f16 file reloads in transformers' GGUF loader with every weight within f16 rounding of the
    merged model's and logits within F16_TOL over the context the file declares. What the loader does not
    read is given from the file itself (`_loader_gaps`; llama3's rope_freqs divide the rotary
    frequencies, as llama.cpp applies them); when the logits differ, the reason names the config fields
    the reload lost."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunelab.runs.load import load_run_model

    cli("export", run, "--to", "gguf", "--quant", "f16", "--out", out)
    files = sorted(out.glob("*.gguf"))
    assert len(files) == 1, f"{len(files)} .gguf files written"
    meta, tensors = _file_facts(files[0])
    ref, _, _ = load_run_model(run, with_adapter=True, device="cpu")
    ref = ref.merge_and_unload().float().eval()
    try:
        got = AutoModelForCausalLM.from_pretrained(out, gguf_file=files[0].name, dtype=torch.float32,
                                                   **_loader_gaps(meta, tensors)).eval()
    except (ValueError, KeyError, NotImplementedError) as e:
        raise AssertionError(f"transformers' GGUF loader: {str(e).splitlines()[0][:160]}") from None
    except RuntimeError:  # shapes the reloaded config does not match
        reloaded = AutoConfig.from_pretrained(out, gguf_file=files[0].name)
        raise AssertionError(f"transformers' GGUF loader: tensor shapes differ, reloaded "
                             f"{_config_diff(ref.config, reloaded)}") from None
    if "rope_freqs.weight" in tensors:  # llama.cpp: theta_i = pos * base^(-2i/d) / rope_freqs[i]
        rot = got.model.rotary_emb
        rot.inv_freq = rot.inv_freq / torch.from_numpy(tensors["rope_freqs.weight"].astype("float32"))
    want, have = ref.state_dict(), got.state_dict()
    assert set(want) == set(have), f"reloaded tensors differ: {sorted(set(want) ^ set(have))[:3]}"
    for k, w in want.items():  # f16 keeps 11 significant bits: |err| <= |w| 2^-11 (+ subnormals)
        assert torch.allclose(have[k], w, rtol=2**-10, atol=1e-6), f"weight {k} differs after the round trip"
    ctx = next((int(v) for k, v in meta.items() if k.endswith(".context_length")), 24)
    ids = _ids()[:, : min(24, ctx)]  # a file capped at a sliding window (mistral) is exact within it
    with torch.no_grad():
        err = (ref(input_ids=ids).logits - got(input_ids=ids).logits).abs().max().item()
    assert err < F16_TOL, (f"weights round-trip, logits differ by {err:.2f}: reloaded "
                           f"{_config_diff(ref.config, got.config)}")


@pytest.mark.parametrize("family", NAMES)
def test_gguf_f16(family, matrix_runs, tmp_path):
    run = matrix_runs(family)
    expect(family, "gguf", outcome_of(lambda: _check_gguf(run, tmp_path / "gguf")))


def _pairs(run) -> list[tuple[tuple, tuple, float]]:
    """(A shape, B shape, |s B A| Frobenius norm) of every adapted layer of the run's PEFT adapter."""
    from safetensors.torch import load_file

    sd = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    out = []
    for k in sorted(k for k in sd if ".lora_A." in k):
        a, b = sd[k].float(), sd[k.replace(".lora_A.", ".lora_B.")].float()
        out.append((tuple(a.shape), tuple(b.shape), round((b @ a).norm().item(), 4)))
    return sorted(out)


def _check_lora_gguf(run, out) -> None:
    """The file is a llama.cpp LoRA adapter (general.type adapter, adapter.type lora, alpha 16) with one
    A/B pair per adapted layer of the same shapes and products (q/k rows may be permuted for llama.cpp's
    rope: the product's norm is compared, which a row permutation keeps)."""
    import numpy as np
    from gguf import GGUFReader

    cli("export", run, "--to", "lora-gguf", "--out", out)
    files = sorted(out.glob("*.gguf"))
    assert len(files) == 1, f"{len(files)} .gguf files written"
    r = GGUFReader(files[0])
    fields = {k: f.contents() for k, f in r.fields.items()}
    assert fields.get("general.type") == "adapter" and fields.get("adapter.type") == "lora", fields.get("general.type")
    assert fields.get("adapter.lora.alpha") == 16.0
    t = {x.name: np.array(x.data, dtype=np.float32) for x in r.tensors}
    got = []
    for name in sorted(n for n in t if n.endswith(".lora_a")):
        a, b = torch.from_numpy(t[name]), torch.from_numpy(t[name[:-1] + "b"])
        got.append((tuple(a.shape), tuple(b.shape), round((b @ a).norm().item(), 4)))
    assert len(t) == 2 * len(got), "tensors that are not lora_a/lora_b pairs"
    assert sorted(got) == _pairs(run), "A/B pairs differ from the PEFT adapter's"


@pytest.mark.parametrize("family", NAMES)
def test_lora_gguf(family, matrix_runs, tmp_path):
    run = matrix_runs(family)
    expect(family, "lora-gguf", outcome_of(lambda: _check_lora_gguf(run, tmp_path / "lora")))


def _check_ollama(run) -> None:
    """`--check` renders every probe conversation through the Modelfile's TEMPLATE (Go template, as
    Ollama reads it) and compares with the run's trained template, writing nothing; check_modelfile
    on the Modelfile it printed agrees."""
    from tunelab.export.ollama import check_modelfile, probe_conversations
    from tunelab.runs.load import load_run

    printed = cli("export", run, "--to", "ollama", "--check")
    modelfile = printed[printed.index("FROM "):]
    rd, _ = load_run(run)
    assert check_modelfile(modelfile, rd.template()) >= len(probe_conversations()) > 0  # + tool probes


@pytest.mark.parametrize("family", NAMES)
def test_ollama_template(family, matrix_runs):
    run = matrix_runs(family)
    expect(family, "ollama", outcome_of(lambda: _check_ollama(run)))
