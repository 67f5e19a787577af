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
    p.write_text(f"model: {{name: {tiny_model_dir}}}\ndata:\n  train: examples/data/tunebot/train.jsonl\n")
    r = subprocess.run([sys.executable, "-m", "tunelab", "data", "inspect", str(p), "-n", "1", "--plot",
                        str(tmp_path / "h.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "84" in r.stdout and "learned" in r.stdout and (tmp_path / "h.png").exists()
