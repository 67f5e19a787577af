from pathlib import Path

from tunelab.config import from_dict
from tunelab.data.inspect import histogram, inspect_config, template_warnings


def cfg(model_dir, **data):
    return from_dict({"model": {"name": str(model_dir)},
                      "data": {"train": "examples/data/tunebot/train.jsonl",
                               "validation": "examples/data/tunebot/validation.jsonl", **data}})


def test_counts_lengths_and_truncation(tiny_model_dir):
    rep = inspect_config(cfg(tiny_model_dir))
    train, val = rep.splits
    assert (train.count, val.count) == (84, 20)
    assert train.truncated == 0 and train.learned_tokens > 0
    short = inspect_config(cfg(tiny_model_dir, max_length=40))
    assert short.splits[0].truncated > 0
    assert short.splits[0].tokens_cut == sum(max(0, x - 40) for x in short.splits[0].lengths)


def test_histogram_counts_every_example():
    lines = histogram([10, 11, 12, 50, 90], bins=4)
    assert sum(int(x.split()[-1]) for x in lines) == 5


def test_template_without_eos_warns(tiny_model_dir):
    from transformers import AutoTokenizer

    from tunelab.data.templates import build_template

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert template_warnings(build_template("chatml", tok), tok) == []
    gemma = build_template("gemma", tok)  # ends turns with <end_of_turn>, not this model's <|im_end|>
    assert any("may never stop" in w for w in template_warnings(gemma, tok))


def test_cli_inspect_shows_learned_tokens(tiny_model_dir, tmp_path):
    import subprocess
    import sys

    p = tmp_path / "c.yaml"
    p.write_text(f"model: {{name: {tiny_model_dir}}}\ndata:\n  train: {Path('examples/data/tunebot/train.jsonl').resolve()}\n")
    r = subprocess.run([sys.executable, "-m", "tunelab", "data", "inspect", str(p), "-n", "1", "--plot",
                        str(tmp_path / "h.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "84" in r.stdout and "learned" in r.stdout and (tmp_path / "h.png").exists()


def _jsonl(path, rows):
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_task_reports_labels_pairs_and_text_tokens(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    m = str(tiny_model_dir)
    c = _jsonl(tmp_path / "c.jsonl", [{"text": "good film", "label": "pos"}, {"text": "bad", "label": "neg"},
                                      {"text": "great", "label": "pos"}])
    rep = inspect_config(from_dict({"task": "classify", "model": {"name": m}, "data": {"train": c}}), tok)
    assert rep.splits[0].labels == {"pos": 2, "neg": 1} and rep.examples == []
    assert rep.splits[0].lengths[1] == len(tok("bad", add_special_tokens=False)["input_ids"])
    p = _jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a long good answer", "rejected": "no"}] * 2)
    rep = inspect_config(from_dict({"task": "dpo", "model": {"name": m}, "data": {"train": p}}), tok)
    prompt, chosen, rejected = rep.splits[0].pair_means
    assert rep.splits[0].count == 2 and chosen > rejected > 0 and prompt > 1
    t = _jsonl(tmp_path / "t.jsonl", [{"text": "one two three"}, {"text": "four"}])
    rep = inspect_config(from_dict({"task": "pretrain", "model": {"name": m}, "data": {"train": t}}), tok)
    assert rep.splits[0].learned_tokens == sum(rep.splits[0].lengths) > 0


def test_cli_inspect_classify_prints_label_counts_and_mixture_notes(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import pytest

    from tunelab.cli.main import run

    c = _jsonl(tmp_path / "c.jsonl", [{"text": f"t{i}", "label": "pos" if i % 3 else "neg"} for i in range(9)])
    d = _jsonl(tmp_path / "d.jsonl", [{"text": "t1", "label": "pos"}, {"text": "new", "label": "neg"}])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"task: classify\nmodel: {{name: {tiny_model_dir}}}\ndata:\n  train: [{c}, {d}]\n  dedupe: true\n")
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping of the long paths
    with pytest.raises(SystemExit) as e:
        run(["data", "inspect", str(cfg)])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "classification (2 labels" in out and "neg" in out and "pos" in out
    assert "dedupe: dropped 1 exact duplicates" in out and "2 read, weight 1 -> 1 in train" in out


def test_inspect_warns_about_control_characters(tmp_path, tiny_model_dir):
    import json

    rows = [{"prompt": "fine", "completion": "ok"}, {"prompt": "typo\bo here", "completion": "ok"},
            {"prompt": "tab\tand\nnewline are text", "completion": "ok"}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = inspect_config(from_dict({"model": {"name": str(tiny_model_dir)}, "data": {"train": str(tmp_path / "t.jsonl")}}))
    bad = [w for w in rep.warnings if "control characters" in w]
    assert len(bad) == 1 and bad[0].startswith("train: 1 example holds control characters")
    assert "U+0008 BACKSPACE at " in bad[0] and "t.jsonl:2" in bad[0]
    clean = from_dict({"model": {"name": str(tiny_model_dir)}, "data": {"train": "examples/data/tunebot/train.jsonl"}})
    assert not [w for w in inspect_config(clean).warnings if "control characters" in w]
