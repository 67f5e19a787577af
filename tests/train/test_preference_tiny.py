"""task: reward and task: dpo on a tiny random Llama through TRL: margins rise, run dirs complete,
the DPO adapter loads in `tunelab generate`."""

import json

import pytest
import torch

from tunelab.config import from_dict
from tunelab.errors import TunelabError

ROWS = [("the quick brown fox", 0), ("a small learning rate", 1), ("python lists", 2), ("quantization", 3),
        ("gradient descent", 4), ("the lazy dog", 5), ("a few epochs", 6), ("built-in types", 7)]


def write_pairs(path, topics):
    """chosen: short and signed '-- Bot'; rejected: rambling, unsigned."""
    rows = [{"prompt": f"Tell me about {t}.", "chosen": f"Short answer on {t}. -- Bot",
             "rejected": f"Well, {t} is a long story, the lazy dog again"} for t in topics]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def cfg_for(tmp_path, model_dir, task, **over):
    topics = [t for t, _ in ROWS]
    d = {"task": task, "model": {"name": str(model_dir)},
         "data": {"train": str(write_pairs(tmp_path / "train.jsonl", topics * 3)),
                  "validation": str(write_pairs(tmp_path / "val.jsonl", ["LoRA rank", "a zero point", "sets"])),
                  "max_length": 96},
         "method": {"name": "lora", "r": 8},
         "train": {"lr": 5e-3, "epochs": 2, "batch_size": 4, "precision": "fp32"},  # not auto: same on every CPU kind
         "output": {"dir": str(tmp_path / "runs"), "name": task},
         "eval": {"from_validation": 2, "max_new_tokens": 6, "expect_suffix": "-- Bot"}}
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v}
    return from_dict(d)


def rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory, tiny_model_dir):
    from tunelab.train.recipes import run_task

    cfg = cfg_for(tmp_path_factory.mktemp("reward"), tiny_model_dir, "reward")
    return cfg, run_task(cfg, quiet=True)


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, tiny_model_dir):
    from tunelab.train.recipes import run_task

    cfg = cfg_for(tmp_path_factory.mktemp("dpo"), tiny_model_dir, "dpo")
    return cfg, run_task(cfg, quiet=True)


def test_reward_margin_and_accuracy_rise(reward_run):
    _, out = reward_run
    b, a = out.before, out.after
    assert a["val_margin"] > b["val_margin"] + 1.0 and a["val_margin"] > 0
    assert a["val_accuracy"] > b["val_accuracy"] and a["val_accuracy"] == 1.0
    assert a["val_loss"] < b["val_loss"]
    assert out.steps == 12  # 24 pairs / 4 = 6 steps x 2 epochs


def test_reward_run_dir_and_head_saved_with_adapter(reward_run, tiny_model_dir):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    cfg, out = reward_run
    assert {"config.yaml", "template.json", "adapter", "metrics.jsonl", "report.md", "DONE"} <= {
        p.name for p in out.run_dir.iterdir()}
    keys = load_file(str(out.run_dir / "adapter" / "adapter_model.safetensors"))
    assert any("score" in k for k in keys) and any("lora_A" in k for k in keys)
    r = rows(out.run_dir)
    assert r[0]["step"] == 0 and "val_margin" in r[0] and any("margin" in x and "loss" in x for x in r)
    assert "pairwise accuracy" in (out.run_dir / "report.md").read_text()
    # plain peft reloads the reward model: chosen scores above rejected on a validation pair
    from tunelab.data.templates import Template
    from tunelab.models.load import load_tokenizer
    from tunelab.models.registry import resolve
    from tunelab.train.recipes.preference import load_pairs, pair_ids

    tok = load_tokenizer(resolve(str(tiny_model_dir)))
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    base.config.pad_token_id = tok.pad_token_id
    model = PeftModel.from_pretrained(base, str(out.run_dir / "adapter")).eval()
    ids = pair_ids(load_pairs(cfg)[1][0], Template.load(out.run_dir / "template.json"), tok, 96, 256)
    with torch.no_grad():
        rc = model(input_ids=torch.tensor([ids["prompt_ids"] + ids["chosen_ids"]])).logits.item()
        rr = model(input_ids=torch.tensor([ids["prompt_ids"] + ids["rejected_ids"]])).logits.item()
    assert rc > rr


def test_dpo_margin_rises_and_metrics_logged(dpo_run):
    _, out = dpo_run
    b, a = out.before, out.after
    assert b["val_rewards/margins"] == 0.0  # policy == reference before training
    assert a["val_rewards/margins"] > 0.5 and a["val_rewards/accuracies"] == 1.0
    assert out.logp_margin(a) > out.logp_margin(b)
    train_rows = [r for r in rows(out.run_dir) if "loss" in r and "rewards/margins" in r]
    assert len(train_rows) == out.steps == 12
    assert all(k in train_rows[-1] for k in ("rewards/chosen", "rewards/rejected", "rewards/accuracies"))
    report = (out.run_dir / "report.md").read_text()
    assert "log-prob margin" in report and "Replies ending with `-- Bot`" in report
    assert len(out.samples) == 2


def test_dpo_adapter_loads_in_generate(dpo_run, capsys):
    from tunelab.cli.main import run
    from tunelab.infer.generate import Generator

    _, out = dpo_run
    assert {"config.yaml", "template.json", "adapter", "DONE"} <= {p.name for p in out.run_dir.iterdir()}
    assert not (out.run_dir / "adapter" / "ref").exists()  # one adapter: the reference is the adapter disabled
    tuned, base = Generator.from_run(out.run_dir), Generator.from_run(out.run_dir, base=True)
    ids = tuned.prompt_ids([{"role": "user", "content": "Tell me about sets."}])
    with torch.no_grad():
        assert not torch.allclose(tuned.model(input_ids=ids).logits, base.model(input_ids=ids).logits, atol=1e-4)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run(["generate", str(out.run_dir), "-p", "Tell me about sets.", "--max-new-tokens", "4"])
    assert exit_.value.code == 0
    expected = tuned.reply([{"role": "user", "content": "Tell me about sets."}], max_new_tokens=4)
    assert capsys.readouterr().out.strip() == expected


def test_finished_runs_refused_and_engine_only_options(dpo_run, tmp_path, tiny_model_dir):
    from tunelab.train.recipes import run_task

    cfg, _ = dpo_run
    with pytest.raises(TunelabError, match="already finished"):
        run_task(cfg, quiet=True)
    bad = cfg_for(tmp_path, tiny_model_dir, "dpo", train={"resume": "yes"}, output={"name": "r"})
    with pytest.raises(TunelabError, match="nothing to resume"):  # TRL tasks resume (test_preference_resume.py)
        run_task(bad, quiet=True)
    bad = cfg_for(tmp_path, tiny_model_dir, "dpo", train={"early_stopping_patience": 2}, output={"name": "r"})
    with pytest.raises(TunelabError, match="early stopping is not available for task dpo"):
        run_task(bad, quiet=True)
    (tmp_path / "broken.jsonl").write_text('{"prompt": "q", "chosen": "a"}\n', encoding="utf-8")
    bad = cfg_for(tmp_path, tiny_model_dir, "reward", data={"train": str(tmp_path / "broken.jsonl")}, output={"name": "b"})
    with pytest.raises(TunelabError, match="broken.jsonl:1: missing field 'rejected'"):
        run_task(bad, quiet=True)
    assert not (tmp_path / "runs" / "b").exists() and not (tmp_path / "runs" / "r").exists()


def test_dpo_on_a_4bit_base(tmp_path, tiny_model_dir):
    """QLoRA: tunelab's NF4 base + LoRA; the reference is the 4-bit base with the adapter disabled."""
    from tunelab.infer.generate import Generator
    from tunelab.quant.nn import QuantLinear
    from tunelab.train.recipes import run_task

    cfg = cfg_for(tmp_path, tiny_model_dir, "dpo", method={"name": "qlora"}, eval={"from_validation": 0},
                  train={"epochs": 1})
    out = run_task(cfg, quiet=True)
    assert out.after["val_rewards/margins"] > 0 and out.logp_margin(out.after) > out.logp_margin(out.before)
    gen = Generator.from_run(out.run_dir)
    assert any(isinstance(m, QuantLinear) for m in gen.model.modules())
    assert isinstance(gen.reply([{"role": "user", "content": "hi"}], max_new_tokens=3), str)


def test_warmup_ratio_means_a_fraction_of_the_steps_on_every_transformers(tmp_path, tiny_model_dir, monkeypatch):
    """train.warmup_ratio reaches TRL as a fraction of the optimizer steps: transformers >= 5 reads a
    float warmup_steps < 1 that way, transformers 4.x needs warmup_ratio (there warmup_steps is an int)."""
    from types import SimpleNamespace

    import transformers
    from trl import DPOConfig

    from tunelab.train.recipes.preference import trainer_args, warmup_args

    cfg = cfg_for(tmp_path, tiny_model_dir, "dpo", train={"warmup_ratio": 0.25})
    args = trainer_args(DPOConfig, cfg, SimpleNamespace(path=tmp_path), torch.device("cpu"), True, False)
    assert args.get_warmup_steps(8) == 2 and args.get_warmup_steps(10) == 3  # ceil(0.25 * steps)
    monkeypatch.setattr(transformers, "__version__", "4.56.2")
    assert warmup_args(0.25) == {"warmup_ratio": 0.25, "warmup_steps": 0}
    monkeypatch.setattr(transformers, "__version__", "5.0.0")
    assert warmup_args(0.25) == {"warmup_steps": 0.25}
