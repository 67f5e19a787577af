"""The export targets registry (tunelab.export.targets): every target's default quant is one of its
quants; an unknown target or quant is one line naming the choices; and the registry alone drives the
CLI's choices and help, the Studio's Export buttons and what it accepts, and `tunelab push --what`:
a new target registered in one line is exported, offered and listed without touching those files."""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from tunelab.errors import TunelabError


def _finished_run(root: Path, name: str = "tunebot") -> Path:
    """A folder that passes `require_run` for export (task sft, DONE); no weights: only fake targets write."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("task: sft\nmodel:\n  name: tiny-llama\nmethod:\n  name: lora\n")
    (d / "DONE").write_text("")
    return d


def _fake_target():
    """A target as a new module would add one: a Target subclass with its own result type."""
    from tunelab.export.targets.base import ExportResult, Target

    @dataclass
    class TextResult(ExportResult):
        words: int = 0

        def summary(self):
            return [f"{self.words} words written"]

        def usage(self):
            return ["use: cat " + str(self.out / "model.txt")]

        def details(self):
            return {"words": self.words}

    class TextTarget(Target):
        name, label, about = "text", "Plain text", "the run's name as text"
        quants, default_quant = ("utf8", "ascii"), "utf8"
        studio, push_as = True, None
        result_type = TextResult

        def write_into(self, job, res, tmp):
            (tmp / "model.txt").write_text(job.run.path.name, encoding=job.quant)
            res.words = 1

    return TextTarget()


@pytest.fixture
def with_text_target(monkeypatch):
    from tunelab.export import targets

    t = _fake_target()
    monkeypatch.setitem(targets.REGISTRY, t.name, t)  # the one registry line
    return t


def test_every_default_quant_is_one_of_its_quants():
    from tunelab.export.targets import REGISTRY, ExportResult, names

    assert set(names()) == {"gguf", "ollama", "hf", "lora-gguf"}
    for name, t in REGISTRY.items():
        assert t.name == name and t.label and t.about and t.quants, name
        assert t.default_quant in t.quants, name
        assert t.check_quant(None) == t.default_quant
        assert all(t.check_quant(q) == q for q in t.quants)
        assert issubclass(t.result_type, ExportResult), name


def test_default_folders(tmp_path):
    from tunelab.export.targets import target

    assert target("gguf").default_folder(tmp_path, "q8_0") == tmp_path / "export" / "gguf-q8_0"
    assert target("hf").default_folder(tmp_path, "f32") == tmp_path / "export" / "hf-f32"
    assert target("lora-gguf").default_folder(tmp_path, "f32") == tmp_path / "export" / "lora-gguf"


def test_unknown_target_and_quant_are_one_line_naming_the_choices():
    from tunelab.export.targets import names, target

    with pytest.raises(TunelabError) as e:
        target("onnx")
    line = e.value.one_line()
    assert "\n" not in line and "unknown export target 'onnx'" in line
    assert all(n in line for n in names())
    with pytest.raises(TunelabError) as e:
        target("hf").check_quant("q4_0")
    line = e.value.one_line()
    assert "\n" not in line and "--quant q4_0 does not apply to --to hf" in line
    assert all(q in line for q in target("hf").quants)


def test_results_are_typed_per_target():
    from tunelab.export.targets import REGISTRY

    hf, gguf, ollama = (REGISTRY[n].result_type for n in ("hf", "gguf", "ollama"))
    assert "merge" in hf.__dataclass_fields__ and "gguf" not in hf.__dataclass_fields__
    assert "gguf" in gguf.__dataclass_fields__ and "modelfile" not in gguf.__dataclass_fields__
    assert {"modelfile", "ollama_name", "gguf"} <= set(ollama.__dataclass_fields__)


def _cli(capsys, *args) -> tuple[int, str, str]:
    from tunelab.cli.main import run

    with pytest.raises(SystemExit) as e:
        run([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_the_cli_help_lists_the_registry(capsys):
    from tunelab.export.targets import REGISTRY, push_targets

    code, out, _ = _cli(capsys, "export", "--help")
    text = " ".join(out.replace("│", " ").split())
    assert code == 0
    for t in REGISTRY.values():
        assert t.name in text and t.default_quant in text
        assert all(q in text for q in t.quants)
    code, out, _ = _cli(capsys, "push", "--help")
    text = " ".join(out.replace("│", " ").split())
    assert code == 0 and all(w in text for w in push_targets())


def test_the_cli_refuses_an_unknown_target_naming_the_registry(tmp_path, capsys, with_text_target):
    from tunelab.export.targets import names

    run = _finished_run(tmp_path)
    code, _, err = _cli(capsys, "export", run, "--to", "onnx")
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and "unknown export target 'onnx'" in lines[0]
    assert all(n in lines[0] for n in names()) and "text" in lines[0]
    code, _, err = _cli(capsys, "export", run, "--to", "text", "--quant", "q8_0")
    assert code == 2 and "--quant q8_0 does not apply to --to text" in err and "utf8, ascii" in err


def test_a_registered_target_is_exported_by_the_cli(tmp_path, capsys, with_text_target):
    run = _finished_run(tmp_path)
    code, out, _ = _cli(capsys, "export", run, "--to", "text")
    folder = run / "export" / "text-utf8"  # Target.default_folder
    assert code == 0 and (folder / "model.txt").read_text() == "tunebot"
    assert "1 words written" in out and f"use: cat {folder / 'model.txt'}" in out and "model.txt" in out
    assert not [p for p in (run / "export").iterdir() if ".tmp-" in p.name]


def test_the_studio_offers_the_registry(tmp_path, with_text_target):
    from tunelab.export.targets import studio_targets
    from tunelab.serve.errors import APIError
    from tunelab.serve.studio import export_view
    from tunelab.serve.studio.runs_view import export_buttons

    offered = [t.name for t in studio_targets()]
    assert offered[:3] == ["gguf", "ollama", "hf"] and "text" in offered and "lora-gguf" not in offered
    buttons = export_buttons()
    assert all(f'data-export="{n}"' in buttons for n in offered) and "Plain text" in buttons
    assert 'data-export="lora-gguf"' not in buttons

    _finished_run(tmp_path, "r1")
    state = types.SimpleNamespace(tenant_runs=lambda tenant: tmp_path)
    with pytest.raises(APIError) as e:
        export_view.export(state, "default", "r1", "lora-gguf")
    assert e.value.status == 400 and "use gguf, ollama, hf or text" in e.value.message
    got = export_view.export(state, "default", "r1", "text")
    assert got["to"] == "text" and got["quant"] == "utf8" and got["words"] == 1
    assert [f["name"] for f in got["files"]] == ["model.txt"]
    assert got["files"][0]["url"] == "/studio/api/runs/r1/download/text-utf8/model.txt"


def test_push_reads_the_registry():
    from tunelab.export import hub
    from tunelab.export.targets import push_targets

    assert hub.WHAT == ("adapter", *push_targets())
    assert {w: t.name for w, t in push_targets().items()} == {"gguf": "gguf", "merged": "hf"}
