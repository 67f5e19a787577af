"""task: pretrain on a tiny random Llama: packs, trains, held-out perplexity drops, run dir complete."""

import json

import pytest

from tunelab.config import from_dict
from tunelab.errors import TunelabError

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Quantization maps floats to integers with a scale.",
             "Use a small learning rate and a few epochs.", "Python lists, dicts and sets are built-in types."]


def corpus(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    for i in range(6):  # a repetitive corpus: the same four sentences in a rotating order
        text = " ".join(SENTENCES[(i + k) % 4] for k in range(4 * 3))
        (d / f"doc{i}.txt").write_text(text, encoding="utf-8")
    return d


def cfg_for(tmp_path, model_dir, **over):
    d = {"task": "pretrain", "model": {"name": str(model_dir)},
         "data": {"train": str(corpus(tmp_path)), "val_split": 0.2, "max_length": 32},
         "method": {"name": "lora", "r": 8},
         "train": {"lr": 1e-2, "epochs": 4, "batch_size": 4, "precision": "fp32"},  # not auto: same on every CPU kind
         "output": {"dir": str(tmp_path / "runs"), "name": "pt"},
         "eval": {"prompts": ["The quick brown"], "max_new_tokens": 4}}
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v}
    return from_dict(d)


@pytest.fixture(scope="module")
def pt_run(tmp_path_factory, tiny_model_dir):
    from tunelab.train.recipes import run_task

    tmp = tmp_path_factory.mktemp("pretrain")
    cfg = cfg_for(tmp, tiny_model_dir)
    return cfg, run_task(cfg, quiet=True)


def test_blocks_and_perplexity_drop(pt_run):
    from tunelab.data.dataset import load_splits
    from tunelab.data.packing import pack
    from tunelab.models.load import load_tokenizer
    from tunelab.models.registry import resolve

    cfg, out = pt_run
    tok = load_tokenizer(resolve(cfg.model.name))
    train_docs, val_docs = load_splits(cfg)
    assert (len(train_docs), len(val_docs)) == (5, 1)  # val_split 0.2 of 6 documents: one whole document held out
    blocks = pack(train_docs, tok, 32)
    assert out.n_train == len(blocks) and out.n_val == len(pack(val_docs, tok, 32))
    assert out.n_tokens == sum(len(b.input_ids) for b in blocks)
    assert out.val_after < out.val_before - 0.5  # repetitive text: held-out NLL/token falls a lot
    lines = out.summary_lines()
    assert any(line.startswith("held-out perplexity: base ") for line in lines)


def test_run_directory_contract(pt_run):
    _, out = pt_run
    names = {p.name for p in out.run_dir.iterdir()}
    assert {"config.yaml", "template.json", "adapter", "metrics.jsonl", "report.md", "DONE"} <= names
    rows = [json.loads(x) for x in (out.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in rows) == out.result.steps and sum("val_loss" in r for r in rows) == 4
    report = (out.run_dir / "report.md").read_text()
    assert "Held-out perplexity" in report and "| base |" in report and "The quick brown" in report


def test_generate_loads_the_pretrain_run(pt_run):
    from tunelab.infer.generate import Generator

    _, out = pt_run
    gen = Generator.from_run(out.run_dir)
    assert isinstance(gen.reply([{"role": "user", "content": "hello"}], max_new_tokens=3), str)


def test_finished_run_refused_and_bad_data_writes_nothing(pt_run, tmp_path, tiny_model_dir):
    from tunelab.train.recipes import run_task

    cfg, _ = pt_run
    with pytest.raises(TunelabError, match="already finished"):
        run_task(cfg, quiet=True)
    bad = cfg_for(tmp_path, tiny_model_dir, data={"train": str(tmp_path / "nope")}, output={"name": "bad"})
    with pytest.raises(TunelabError, match="nope"):
        run_task(bad, quiet=True)
    assert not (tmp_path / "runs" / "bad").exists()


def test_full_method_saves_model_and_learns(tmp_path, tiny_model_dir):
    from tunelab.train.recipes import run_task

    cfg = cfg_for(tmp_path, tiny_model_dir, method={"name": "full"}, train={"lr": 1e-3, "epochs": 2},
                  eval={"prompts": []})
    out = run_task(cfg, quiet=True)
    assert (out.run_dir / "model" / "config.json").exists() and (out.run_dir / "DONE").exists()
    assert out.val_after < out.val_before
