"""tunelab's GRPO against TRL's GRPOTrainer on the same task, model, LoRA, G, lengths and steps.

    python benchmarks/grpo_trl.py --config examples/configs/grpo-json.yaml --steps 3 [--model tiny-llama]

Both train the config's LoRA (same rank, alpha, blocks) with the config's rewards for `--steps` optimizer
steps of G x P sampled rows (G = grpo.num_generations, P = grpo.prompts_per_step), no held-out pass.
Prints JSON per trainer:

    seconds_per_step   wall time of a step, rollouts included (the mean over the steps)
    rollout_tokens_s   completion tokens sampled / seconds spent sampling
    prefill_s, decode_s  tunelab only: the sampling time split at the first token (train/grpo_rollout.py)
    reward             the sampled mean reward of each step (temperature > 0: noisy)

TRL's sampling time is the time inside the policy's `generate` (transformers' generate, no vLLM), its
tokens the completion lengths TRL logs. Run on an idle machine: the two runs are sequential.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def run_tunelab(cfg, steps: int, out: Path) -> dict:
    from tunelab.train.recipes import run_task

    cfg = cfg.model_copy(deep=True)
    cfg.data.validation, cfg.data.val_split = None, 0.0
    cfg.train.max_steps = steps
    cfg.output.dir, cfg.output.name, cfg.output.overwrite = str(out), "tunelab", True
    run_task(cfg, quiet=True)
    recs = [json.loads(x) for x in (out / "tunelab" / "metrics.jsonl").read_text().splitlines()]
    st = [r for r in recs if "loss" in r]
    times = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip([{"elapsed_s": 0.0}] + st, st)]
    tokens, sampling = sum(r["rollout_tokens"] for r in st), sum(r["rollout_s"] for r in st)
    return {"seconds_per_step": sum(times) / len(times), "rollout_tokens_s": tokens / sampling,
            "prefill_s": sum(r["prefill_s"] for r in st), "decode_s": sum(r["decode_s"] for r in st),
            "reward": [r["reward"] for r in st]}


def run_trl(cfg, steps: int, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from tunelab.models.registry import resolve
    from tunelab.train.grpo_config import grpo_settings
    from tunelab.train.recipes.grpo import load_prompts
    from tunelab.train.rewards import load_rewards, score

    g = grpo_settings(cfg.grpo)
    rows = load_prompts(cfg)
    rewards = load_rewards(g.rewards, Path(cfg.config_dir or cfg.base_dir))
    path = resolve(cfg.model.name).path
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    layers = model.config.num_hidden_layers
    m = cfg.method
    blocks = list(range(layers)) if m.layers == "all" else list(range(layers - int(m.layers), layers))
    peft = LoraConfig(r=m.r, lora_alpha=m.alpha, lora_dropout=m.dropout, layers_to_transform=blocks,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      task_type="CAUSAL_LM")
    data = Dataset.from_list([{"prompt": r.messages, **{k: json.dumps(v) for k, v in r.columns.items()}}
                              for r in rows])
    names = list(rows[0].columns)

    def reward(prompts, completions, **cols):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return score(rewards, prompts, texts, {k: [json.loads(v) for v in cols[k]] for k in names})[0]

    per_step = g.num_generations * (g.prompts_per_step or cfg.train.batch_size)
    args = GRPOConfig(output_dir=str(out / "trl"), num_generations=g.num_generations, per_device_train_batch_size=per_step,
                      steps_per_generation=1, max_completion_length=g.max_completion_length, temperature=g.temperature,
                      top_p=g.top_p, beta=g.beta, loss_type=g.loss_type, epsilon=g.epsilon, learning_rate=cfg.train.lr,
                      lr_scheduler_type="constant", warmup_steps=0, max_steps=steps, logging_steps=1, use_cpu=True,
                      report_to=[], save_strategy="no", seed=cfg.train.seed, scale_rewards="group",
                      mask_truncated_completions=g.mask_truncated_completions)
    clock = {"gen": 0.0, "steps": [], "t": 0.0, "logs": []}

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            clock["t"] = time.perf_counter()

        def on_step_end(self, *a, **k):
            clock["steps"].append(time.perf_counter() - clock["t"])

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "reward" in logs:
                clock["logs"].append(logs)

    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tok,
                          peft_config=peft, callbacks=[Timer()])
    inner = trainer.model.generate

    def timed_generate(*a, **k):
        t = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            clock["gen"] += time.perf_counter() - t
    trainer.model.generate = timed_generate
    trainer.train()
    logs = clock["logs"]
    tokens = sum(x["completions/mean_length"] * per_step for x in logs)
    return {"seconds_per_step": sum(clock["steps"]) / len(clock["steps"]),
            "rollout_tokens_s": tokens / clock["gen"] if clock["gen"] else None, "sampling_s": clock["gen"],
            "reward": [x["reward"] for x in logs]}


def main() -> None:
    from tunelab.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="examples/configs/grpo-json.yaml")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--model", default=None, help="another model than the config's (e.g. tiny-llama)")
    a = ap.parse_args()
    cfg = load_config(a.config)
    if a.model:
        cfg.model.name = a.model
    with tempfile.TemporaryDirectory(prefix="grpo_trl_") as tmp:
        out = {"config": a.config, "model": cfg.model.name, "steps": a.steps,
               "tunelab": run_tunelab(cfg, a.steps, Path(tmp)), "trl": run_trl(cfg, a.steps, Path(tmp))}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
