"""`tunelab push`: the model card of a real run, the upload (through a stand-in HfApi), and the one-line
refusals when the hub cannot be used (offline, no token, unreachable), before anything heavy."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tunelab.errors import TunelabError



@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_run) -> Path:
    """A 2-step LoRA run on 12 train / 2 validation examples (report.md has base and tuned val loss)."""
    return tiny_run(tmp_path_factory.mktemp("hub"), "tunebot", n_train=12, n_val=2, steps=2)


class FakeApi:
    """Records what push_run asks of HfApi; keeps a copy of the uploaded folder."""

    def __init__(self):
        self.created, self.uploaded = None, {}

    def whoami(self):
        return {"name": "alice"}

    def create_repo(self, repo_id, **kw):
        self.created = (repo_id, kw)
        return f"https://hub.test/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kw):
        root = Path(folder_path)
        self.uploaded = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")


def test_model_card_of_a_run(run_dir):
    from tunelab.export.hub import model_card
    from tunelab.runs.load import load_run

    _, cfg = load_run(run_dir)
    card = model_card(run_dir, cfg, "adapter", "alice/tunebot")
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: peft" in front and "- tunelab" in front and "- lora" in front
    assert "base_model" not in front  # a local base folder is no hub id
    assert "- method: `lora` (r=4, alpha=16" in body
    assert "`train.jsonl` (12 examples)" in body and "`val.jsonl` (2 examples)" in body
    assert 'system prompt: "You are TuneBot."' in body and "2 optimizer steps" in body
    report = (run_dir / "report.md").read_text()
    base = report.split("| base | ")[1].split(" |")[0]
    tuned = report.split("| final (kept) | ")[1].split(" |")[0]
    assert f"base {base} -> tuned {tuned}" in body  # the report's figures, verbatim
    assert f"| base | {base} |" in body
    assert "AutoPeftModelForCausalLM" in body and str(run_dir.parent) not in card  # no local paths

    cfg["model"]["name"] = "smollm2-135m-instruct"  # an alias: the card names its hub id
    merged = model_card(run_dir, cfg, "merged", "alice/tunebot")
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in merged and "library_name: transformers" in merged
    gguf = model_card(run_dir, cfg, "gguf", "alice/tunebot", "q4_0")
    assert "library_name" not in gguf.split("---")[1] and "- gguf" in gguf and "ollama run hf.co/alice/tunebot" in gguf


def test_base_model_id():
    from tunelab.export.hub import base_model_id

    assert base_model_id("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model_id("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    assert base_model_id("tiny-llama") is None and base_model_id("./x.gguf") is None


def test_push_adapter_uploads_the_adapter_and_the_card(run_dir, online):
    from tunelab.export.hub import push_run

    api = FakeApi()
    res = push_run(run_dir, "alice/tunebot", private=True, api=api)
    assert api.created == ("alice/tunebot", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md"} <= set(api.uploaded)
    assert api.uploaded["adapter_model.safetensors"] == (run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    assert b"tunelab" in api.uploaded["README.md"] and b"library_name: peft" in api.uploaded["README.md"]
    assert res.url == "https://hub.test/alice/tunebot" and res.private
    assert not list(run_dir.glob(".push-*"))  # the staging folder is gone


def test_push_merged_uploads_a_transformers_model(run_dir, online):
    from tunelab.export.hub import push_run

    api = FakeApi()
    push_run(run_dir, "alice/tunebot-merged", what="merged", quant="bf16", api=api)
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= set(api.uploaded)
    assert b"library_name: transformers" in api.uploaded["README.md"]


def _cli(*args) -> int:
    from tunelab.cli.main import run

    with pytest.raises(SystemExit) as e:
        run([str(a) for a in args])
    return e.value.code


def _one_line(err: str, fragment: str) -> None:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


def test_offline_is_refused_in_one_line(run_dir, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    assert _cli("push", run_dir, "alice/tunebot", "--what", "merged") == 2
    _one_line(capsys.readouterr().err, "offline mode is on")
    assert not list(run_dir.glob(".push-*"))


def test_no_token_is_refused(run_dir, online, monkeypatch):
    from tunelab.export import hub

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(hub, "hub_token", lambda: None)
    with pytest.raises(TunelabError, match="no Hugging Face token"):
        hub.push_run(run_dir, "alice/tunebot")


def test_unreachable_hub_is_refused_in_one_line(run_dir):
    """HF_ENDPOINT on a closed local port, a dummy token: the real HfApi fails to connect (a fresh process,
    so huggingface_hub reads the environment at import)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the socket is
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_TOKEN="hf_dummy")
    r = subprocess.run([sys.executable, "-m", "tunelab", "push", str(run_dir), "alice/tunebot", "--what", "gguf"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    _one_line(r.stderr, f"cannot reach the Hugging Face Hub at http://127.0.0.1:{port}")
    assert "Traceback" not in r.stderr and not list(run_dir.glob(".push-*"))


@pytest.mark.parametrize("args, fragment", [
    (["not-a-repo-id"], "is not a repo id"),
    (["alice/x", "--what", "weights"], "unknown --what"),
    (["alice/x", "--quant", "q4_0"], "--quant does not apply to --what adapter"),
    (["alice/x", "--what", "merged", "--quant", "q4_0"], "does not apply"),
])
def test_bad_arguments_are_refused_before_connecting(run_dir, args, fragment, capsys):
    assert _cli("push", run_dir, *args) == 2
    _one_line(capsys.readouterr().err, fragment)
