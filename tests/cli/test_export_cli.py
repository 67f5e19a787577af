"""`tunelab export RUN --to hf|gguf|ollama|lora-gguf`: what is written, what is printed, and the one-line
refusals, which come before any merging and leave nothing half-written behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' "
          "+ m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_run) -> Path:
    """A 2-step LoRA run of the tiny Llama with template auto (its ChatML Jinja) and a system prompt."""
    return tiny_run(tmp_path_factory.mktemp("export"), "tunebot", n_train=8, n_val=1, steps=2)


def cli(capsys, *args) -> tuple[int, str, str]:
    from tunelab.cli.main import run

    with pytest.raises(SystemExit) as e:
        run([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def one_line_error(code: int, err: str, fragment: str) -> None:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


def no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_export_hf_writes_a_loadable_model(run_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    code, out, _ = cli(capsys, "export", run_dir, "--to", "hf", "--quant", "bf16", "--out", tmp_path / "hf")
    assert code == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "hf").iterdir()}
    assert "wrote" in out and "model.safetensors" in out and "KiB" in out
    AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert "You are TuneBot." in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    no_leftovers(tmp_path)


def test_export_ollama_writes_gguf_and_modelfile(run_dir, capsys):
    pytest.importorskip("tunelab.export.gguf")
    from tunelab.data.templates import Template
    from tunelab.export.ollama import check_modelfile, parse_modelfile

    code, out, _ = cli(capsys, "export", run_dir, "--to", "ollama", "--quant", "q8_0")
    assert code == 0
    out_dir = run_dir / "export" / "ollama-q8_0"  # the default --out
    assert sorted(p.name for p in out_dir.iterdir()) == ["Modelfile", "tunebot-q8_0.gguf"]
    assert (out_dir / "tunebot-q8_0.gguf").read_bytes()[:4] == b"GGUF"
    text = (out_dir / "Modelfile").read_text()
    cmds = parse_modelfile(text)
    assert ("model", "./tunebot-q8_0.gguf") in cmds and ("system", "You are TuneBot.") in cmds
    assert ("stop", "<|im_end|>") in cmds and ("num_ctx", "1024") in cmds  # min(1024 positions, max(512, 2048))
    assert check_modelfile(text, Template.load(run_dir / "template.json")) == 8
    assert f"ollama create tunebot -f {out_dir / 'Modelfile'}" in out
    assert "chatml (matched from auto)" in out and "note" not in out  # the tiny tokenizer adds no BOS
    no_leftovers(out_dir.parent)


def test_export_gguf_and_lora_gguf(run_dir, tmp_path, capsys):
    pytest.importorskip("tunelab.export.gguf")
    code, out, _ = cli(capsys, "export", run_dir, "--to", "gguf", "--out", tmp_path / "g")
    assert code == 0 and [p.name for p in (tmp_path / "g").iterdir()] == ["tunebot-f16.gguf"]
    assert (tmp_path / "g" / "tunebot-f16.gguf").read_bytes()[:4] == b"GGUF" and "llama-cli -m" in out
    code, out, _ = cli(capsys, "export", run_dir, "--to", "lora-gguf", "--out", tmp_path / "l")
    assert code == 0 and [p.name for p in (tmp_path / "l").iterdir()] == ["tunebot-lora.gguf"]
    assert "--lora" in out
    no_leftovers(tmp_path)


def test_check_builds_the_modelfile_and_writes_nothing(run_dir, tmp_path, capsys):
    code, out, _ = cli(capsys, "export", run_dir, "--to", "ollama", "--check", "--out", tmp_path / "o")
    assert code == 0 and "checked on 8 conversations" in out and 'TEMPLATE """' in out
    assert not (tmp_path / "o").exists()


def test_existing_out_needs_overwrite(run_dir, tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "keep.txt").write_text("x")
    code, _, err = cli(capsys, "export", run_dir, "--to", "hf", "--out", tmp_path / "hf")
    one_line_error(code, err, "exists and is not empty")
    assert (tmp_path / "hf" / "keep.txt").exists()
    code, _, _ = cli(capsys, "export", run_dir, "--to", "hf", "--out", tmp_path / "hf", "--overwrite")
    assert code == 0 and not (tmp_path / "hf" / "keep.txt").exists() and (tmp_path / "hf" / "config.json").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--to", "onnx"], "unknown export target 'onnx'"),
    (["--to", "hf", "--quant", "q4_0"], "--quant q4_0 does not apply to --to hf"),
    (["--to", "gguf", "--quant", "q5_k"], "--quant q5_k does not apply to --to gguf"),
    (["--to", "lora-gguf", "--quant", "q8_0"], "does not apply to --to lora-gguf"),
    (["--to", "gguf", "--check"], "--check applies to --to ollama"),
])
def test_bad_options_fail_in_one_line(run_dir, args, fragment, capsys):
    code, _, err = cli(capsys, "export", run_dir, *args)
    one_line_error(code, err, fragment)


def test_out_may_not_replace_the_run(run_dir, capsys):
    code, _, err = cli(capsys, "export", run_dir, "--to", "hf", "--out", run_dir.parent, "--overwrite")
    one_line_error(code, err, "holds the run itself")
    assert (run_dir / "DONE").exists()


def test_not_a_run_fails_in_one_line(tmp_path, capsys):
    code, _, err = cli(capsys, "export", tmp_path, "--to", "hf")
    one_line_error(code, err, "is not a tunelab run directory")


def test_unmatched_template_is_refused_before_merging(run_dir, tmp_path, capsys):
    run2 = tmp_path / "llama3-run"
    shutil.copytree(run_dir, run2, ignore=shutil.ignore_patterns("export"))
    t = json.loads((run2 / "template.json").read_text())
    t.update(jinja=LLAMA3, eos="<|eot_id|>")
    (run2 / "template.json").write_text(json.dumps(t))
    code, _, err = cli(capsys, "export", run2, "--to", "ollama", "--out", tmp_path / "o")
    one_line_error(code, err, "matches no built-in format")
    assert "data.template: chatml" in err and not (tmp_path / "o").exists()
    no_leftovers(tmp_path)


def test_failed_export_leaves_nothing_that_looks_complete(run_dir, tmp_path, monkeypatch):
    gguf = pytest.importorskip("tunelab.export.gguf")
    from tunelab.export.bundle import export_run

    def broken(model_dir, out, quant="f16"):
        Path(out).write_bytes(b"GGUF half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(gguf, "write_gguf", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_run(run_dir, "ollama", out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    no_leftovers(tmp_path)


@pytest.mark.parametrize("flag", [True, False])
def test_reads_whether_the_gguf_adds_bos(tmp_path, flag):
    """Ollama puts BOS before each prompt when the GGUF says so: which token's text, for the TEMPLATE to leave out."""
    gguf = pytest.importorskip("gguf")
    from tunelab.export.targets.ollama import adds_bos, runtime_bos

    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    w.add_add_bos_token(flag)
    w.add_token_list(["<pad>", "<eos>", "<bos>", "hi"])
    w.add_bos_token_id(2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert adds_bos(tmp_path / "m.gguf") is flag
    assert runtime_bos(tmp_path / "m.gguf") == ("<bos>" if flag else "")
