"""task grpo's held-out pass on the tiny Llama: data.validation is taken (no longer refused), the greedy
reply of every held-out prompt is scored before training and after it, and the figures in metrics.jsonl,
heldout.jsonl and report.md are the rewards of transformers' own greedy replies (base, then base + the
saved adapter). data.val_split holds out training prompts."""

import json
import math

import pytest
import torch

REWARDS = '''
def chars(prompts, completions, **cols):
    return [min(1.0, len(c) / 40) for c in completions]

def has_digit(prompts, completions, answer, **cols):
    return [float(any(ch.isdigit() for ch in c)) for c in completions]
'''


def _cfg(tmp, model, extra_data: dict):
    from tunelab.config import from_dict

    rows = [{"prompt": f"What is {a} + {b}?", "answer": str(a + b)} for a, b in [(2, 3), (4, 4), (7, 1), (9, 9)]]
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    held = [{"prompt": f"Compute {a} - {b}.", "answer": str(a - b)} for a, b in [(9, 2), (8, 5), (7, 7)]]
    (tmp / "held.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    (tmp / "rw.py").write_text(REWARDS)
    return from_dict({
        "task": "grpo", "model": {"name": str(model)},
        "data": {"train": str(tmp / "train.jsonl"), **extra_data},
        "method": {"name": "lora", "r": 4, "alpha": 16},
        "train": {"lr": 0.2, "max_steps": 2, "precision": "fp32", "warmup_ratio": 0.0, "scheduler": "constant",
                  "eval_every": 1},
        "grpo": {"num_generations": 2, "prompts_per_step": 2, "max_completion_length": 12,
                 "rewards": [{"function": str(tmp / "rw.py") + ":chars", "weight": 0.5},
                             {"function": str(tmp / "rw.py") + ":has_digit"}]},
        "output": {"dir": str(tmp / "runs"), "name": "g"}})


def _greedy(model_dir, adapter, prompts, tok, n_new):
    """transformers' greedy replies (the reference for the engine's), as the recipe renders the prompts."""
    from transformers import AutoModelForCausalLM

    from tunelab.data.templates import build_template
    from tunelab.data.tokenize import encode_segments

    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    template = build_template("auto", tok)
    out = []
    for p in prompts:
        ids, _ = encode_segments(tok, template.segments([{"role": "user", "content": p}], add_generation_prompt=True))
        with torch.no_grad():
            gen = model.generate(torch.tensor([ids]), max_new_tokens=n_new, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)[0, len(ids):].tolist()
        out.append(tok.decode([t for t in gen if t != tok.eos_token_id], skip_special_tokens=True).strip())
    return out


def test_heldout_before_and_after_are_the_greedy_rewards(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from tunelab.train.recipes import run_task

    run_task(_cfg(tmp_path, tiny_model_dir, {"validation": str(tmp_path / "held.jsonl")}), quiet=True)
    run = tmp_path / "runs" / "g"
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    passes = [r for r in recs if "heldout/reward" in r]
    assert [p["step"] for p in passes] == [0, 1, 2] and all(p["heldout_n"] == 3 for p in passes)  # eval_every 1
    passes = [passes[0], passes[2]]  # the last step's pass is the "after" one (not decoded twice)
    rows = [json.loads(x) for x in (run / "heldout.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in rows] == ["7", "3", "0"]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [r["prompt"] for r in rows]
    for key, adapter, rec in (("before", None, passes[0]), ("after", run / "adapter", passes[1])):
        want = _greedy(tiny_model_dir, adapter, prompts, tok, 12)
        assert key == "before" or any(want)  # the tiny base replies with blank lines; trained, it does not
        assert [r[key]["reply"] for r in rows] == want, key
        chars = [min(1.0, len(t) / 40) for t in want]
        digit = [float(any(ch.isdigit() for ch in t)) for t in want]
        assert rec["heldout/chars"] == pytest.approx(sum(chars) / 3, abs=1e-4)
        assert rec["heldout/has_digit"] == pytest.approx(sum(digit) / 3, abs=1e-4)
        assert rec["heldout/reward"] == pytest.approx((0.5 * sum(chars) + sum(digit)) / 3, abs=1e-4)
    kept = json.loads((run / "heldout_before.json").read_text())  # what --resume reads instead of decoding again
    assert kept["texts"] == [r["before"]["reply"] for r in rows] and kept["total"] == [r["before"]["reward"] for r in rows]
    report = (run / "report.md").read_text()
    assert "## Held-out prompts: reward of the greedy reply (3 prompts)" in report
    total = next(x for x in report.splitlines() if x.startswith("| total |"))
    b, a = passes[0]["heldout/reward"], passes[1]["heldout/reward"]
    assert f"| {b:.3f} [" in total and f"| {a:.3f} [" in total and f"| {a - b:+.3f} [" in total


def test_val_split_holds_training_prompts_out(tmp_path, tiny_model_dir, monkeypatch):
    from tunelab.train.recipes import grpo

    cfg = _cfg(tmp_path, tiny_model_dir, {"val_split": 0.5})
    rows, held = grpo.train_and_heldout(cfg)
    assert len(rows) == 2 and len(held) == 2
    assert {r.prompt for r in rows} | {r.prompt for r in held} == {f"What is {a} + {b}?" for a, b in
                                                                    [(2, 3), (4, 4), (7, 1), (9, 9)]}
    assert [r.index for r in rows] == [0, 1] and [r.index for r in held] == [0, 1]
    again = grpo.train_and_heldout(cfg)[1]
    assert [r.prompt for r in again] == [r.prompt for r in held]  # seeded by data.seed


def test_intervals():
    from tunelab.train.grpo_heldout import mean_interval, paired_interval

    lo, hi = mean_interval([0.0, 1.0] * 20)
    assert lo < 0.5 < hi and 0.25 < lo and hi < 0.75
    assert mean_interval([0.3] * 10) == pytest.approx((0.3, 0.3))
    lo, hi = paired_interval([0.0] * 30, [1.0] * 15 + [0.0] * 15)
    assert lo > 0.2 and hi < 0.8
    assert all(math.isnan(x) for x in mean_interval([]))
