"""task grpo end to end on the tiny Llama: `tunelab train` for 2 steps changes the adapter and writes the
statistics; the decode engine's unmerged LoRA follows the trained adapter (`refresh_adapters`); rollouts
come in groups of G with their truncation flags."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunelab.train.grpo_rollout import Rollout, refresh_adapters, rollout_engine, sample

STATS = ("reward", "reward_std", "frac_reward_zero_std", "completion_length", "truncated", "clip_ratio", "kl",
         "rewards/length/mean", "rewards/length/std", "rewards/contains/mean", "rewards/contains/std")


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("grpo")
    rows = [{"prompt": f"What is {a} + {b}? End with '#### N'.", "answer": str(a + b)}
            for a, b in [(23, 58), (11, 12), (40, 2), (7, 70)]]
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "cfg.yaml").write_text(f"""task: grpo
model: {{name: {tiny_model_dir}}}
data: {{train: train.jsonl}}
method: {{name: lora, r: 4, alpha: 16}}
train: {{lr: 1.0e-2, max_steps: 2, precision: fp32, warmup_ratio: 0.0, scheduler: constant, save_every: 1,
        keep_checkpoints: all}}
grpo:
  num_generations: 4
  prompts_per_step: 2
  max_completion_length: 8
  beta: 0.1
  rewards:
    - {{name: length, target: 4}}
    - {{name: contains, column: answer, weight: 0.5}}
output: {{dir: {tmp / 'runs'}, name: g}}
""")
    exe = Path(sys.executable).parent / "tunelab"
    p = subprocess.run([str(exe), "train", str(tmp / "cfg.yaml")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return tmp / "runs" / "g", p, tmp / "cfg.yaml"


def test_two_steps_change_the_adapter_and_log_the_statistics(grpo_run):
    from safetensors.torch import load_file

    run, p, _ = grpo_run
    assert (run / "DONE").exists() and (run / "report.md").exists()
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    b = [v for k, v in weights.items() if "lora_B" in k]
    assert b and max(float(v.abs().max()) for v in b) > 0  # PEFT starts B at 0: training moved it
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert all(k in r for k in STATS), sorted(r)
        assert 0 < r["completion_length"] <= 8 and 0 <= r["frac_reward_zero_std"] <= 1
        assert 0 < r["rollout_s"] < r["elapsed_s"] + 1
        assert r["reward"] == pytest.approx(r["rewards/length/mean"] + 0.5 * r["rewards/contains/mean"], abs=1e-4)
    assert steps[0]["kl"] == 0.0 and steps[1]["kl"] > 0  # the first rollout's policy is the reference
    assert "mean reward: step 1" in p.stdout + p.stderr
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["task"] == "grpo" and saved["grpo"]["loss_type"] == "grpo" and saved["grpo"]["epsilon"] == 0.2


def test_resume_samples_and_trains_what_the_whole_run_did(grpo_run, tmp_path):
    """The run cut back to its step-1 checkpoint and rerun: the same step 2 (the sampling seed comes from
    torch's RNG, which the checkpoint restores), so the same adapter, bit for bit."""
    import shutil

    from safetensors.torch import load_file

    from tunelab.config import load_config
    from tunelab.train.recipes import run_task

    run, _, cfg_path = grpo_run
    whole = load_file(run / "adapter" / "adapter_model.safetensors")
    rows = (run / "metrics.jsonl").read_text()
    shutil.copytree(run, tmp_path / "kept")
    try:
        (run / "DONE").unlink()
        shutil.rmtree(run / "checkpoints" / "step-2")
        run_task(load_config(cfg_path), quiet=True)
        again = load_file(run / "adapter" / "adapter_model.safetensors")
        assert all(torch.equal(whole[k], again[k]) for k in whole)
        timing = ("tokens_per_s", "elapsed_s", "peak_rss_mb", "rollout_s", "prefill_s", "decode_s")
        step2 = [{k: v for k, v in json.loads(x).items() if k not in timing}
                 for x in ((run / "metrics.jsonl").read_text().splitlines()[1], rows.splitlines()[1])]
        assert step2[0] == step2[1] and step2[0]["step"] == 2  # the same rollouts, rewards and loss
    finally:  # the module's run as it was, for the other tests
        shutil.rmtree(run)
        shutil.copytree(tmp_path / "kept", run)


def test_engine_follows_the_trained_adapter(tiny_lora):
    model = tiny_lora()
    model.eval()
    engine = rollout_engine(model)
    ids = [1, 5, 9, 13, 17]
    with torch.no_grad():
        before = model(input_ids=torch.tensor([ids])).logits[0]
    torch.testing.assert_close(engine.logits(ids), before, atol=1e-4, rtol=1e-4)
    base_w = engine.w.blocks[0].qkv.w
    with torch.no_grad():  # an optimizer step's worth of change to every LoRA matrix
        for k, prm in model.named_parameters():
            if "lora_" in k:
                prm.add_(torch.randn_like(prm) * 0.05)
        after = model(input_ids=torch.tensor([ids])).logits[0]
    assert (after - before).abs().max() > 1e-3
    assert (engine.logits(ids) - after).abs().max() > 1e-4  # stale until refreshed
    refresh_adapters(engine, model)
    torch.testing.assert_close(engine.logits(ids), after, atol=1e-4, rtol=1e-4)
    assert engine.w.blocks[0].qkv.w is base_w  # the base copy was not rebuilt


def test_sample_groups_and_truncation(tiny_lora, tiny_model_dir):
    from tunelab.infer.sampling import Sampler
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    engine = rollout_engine(tiny_lora())
    prompts = [[1, 5, 9], [1, 7]]
    ro = sample(engine, tok, prompts, 3, 6, {2}, Sampler(1.0, 1.0, seed=0))
    assert isinstance(ro, Rollout) and ro.prompt_ids == [prompts[0]] * 3 + [prompts[1]] * 3
    for c, cut in zip(ro.completion_ids, ro.truncated):
        assert 1 <= len(c) <= 6
        assert cut == (c[-1] != 2) and (not cut or len(c) == 6)
    again = sample(engine, tok, prompts, 3, 6, {2}, Sampler(1.0, 1.0, seed=0))
    assert again.completion_ids == ro.completion_ids  # seeded: the same draws


def test_prompt_rows_and_length_limit(tmp_path):
    from tunelab.config import from_dict
    from tunelab.errors import TunelabError
    from tunelab.train.recipes.grpo import check_lengths, load_prompts

    (tmp_path / "p.jsonl").write_text(
        json.dumps({"prompt": "What is 1 + 2?", "answer": "3"}) + "\n"
        + json.dumps({"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}],
                      "answer": "4"}) + "\n")
    cfg = from_dict({"task": "grpo", "data": {"train": str(tmp_path / "p.jsonl")}})
    rows = load_prompts(cfg)
    assert [r.messages[-1]["content"] for r in rows] == ["What is 1 + 2?", "2 + 2?"]
    assert [r.columns for r in rows] == [{"answer": "3"}, {"answer": "4"}]
    rows[1].ids = list(range(10))
    rows[0].ids = list(range(3))
    check_lengths(rows, 14, 4)
    with pytest.raises(TunelabError, match="the prompt is 10 tokens; with grpo.max_completion_length 5") as e:
        check_lengths(rows, 14, 5)
    assert e.value.where.endswith(":2")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(TunelabError, match="needs 'prompt'"):
        load_prompts(from_dict({"task": "grpo", "data": {"train": str(tmp_path / "bad.jsonl")}}))


def test_a_grpo_run_generates_like_an_sft_run(grpo_run):
    """runs/kinds: grpo is a generative task, so generate (and chat, merge, export, serve) take its run."""
    run, _, _ = grpo_run
    exe = Path(sys.executable).parent / "tunelab"
    p = subprocess.run([str(exe), "generate", str(run), "-p", "What is 1 + 2?", "-p", "2 + 2?", "--max-new-tokens", "4"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("### ") == 2  # one reply per prompt (tests/cli/test_cli_flow.py)
