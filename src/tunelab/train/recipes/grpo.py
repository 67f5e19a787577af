"""Group Relative Policy Optimization (task: grpo) on the tunelab engine.

setup:  run dir -> prompts (a `prompt` column: text or chat messages; or `messages` ending with a user
        turn; every other column goes to the rewards) -> rewards (train/rewards.py) -> model + template
train:  adapt (lora | qlora) -> engine.train_loop with `GrpoObjective`: each micro-batch of P prompts
        (grpo.prompts_per_step, else train.batch_size) is G x P completions sampled on the decode engine
        with the live adapter (train/grpo_rollout.py), scored, turned into group advantages and the
        clipped policy-gradient loss (train/grpo_loss.py), then one optimizer step
save:   adapter, template, config, metrics.jsonl (the step's loss + the GRPO statistics), report.md, DONE

Checkpoints, resume and Ctrl-C are the engine's: a step's sampling seed is drawn from torch's RNG, which
the checkpoint saves, so a resumed run samples what the uninterrupted run would have. Held-out prompts
(data.validation, or data.val_split of the train rows) get a greedy pass before training, every
train.eval_every steps (a number) and after it (train/grpo_heldout.py): their rewards go to metrics.jsonl,
before -> after with bootstrap intervals to report.md.

Statistics per step (metrics.jsonl, means over the step's micro-batches): reward (mean total), reward_std
(mean of the groups' std), rewards/<name>/mean and /std per function (/errors: a grader's failed grades,
summed), frac_reward_zero_std (groups whose G rewards are all equal: no gradient from them),
completion_length (mean tokens), truncated (share without a stop token), clip_ratio, kl (beta > 0), rollout_s (seconds spent sampling: prefill_s
the prompts' forward, decode_s the one-token steps), rollout_tokens (completion tokens sampled).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from tunelab.config import RunConfig
from tunelab.data.formats import apply_columns
from tunelab.data.sources import read_source
from tunelab.data.templates import build_template
from tunelab.data.tokenize import encode_segments
from tunelab.errors import TunelabError
from tunelab.runtime.precision import autocast_dtype
from tunelab.train.distributed import is_main
from tunelab.train.engine import TrainResult
from tunelab.train.grpo_config import GrpoConfig, grpo_settings
from tunelab.train.grpo_heldout import Pass, greedy_pass, report_lines, rows_record, split_heldout
from tunelab.train.grpo_loss import completion_logprobs, group_advantages, grpo_loss
from tunelab.train.grpo_rollout import refresh_adapters, rollout_engine, sample, seeded_sampler, stop_ids
from tunelab.train.loggers import MetricsLogger
from tunelab.train.recipes._common import (Outcome, adapt, begin_run, finish_run, load_base, quantize_for_training,
                                           setup_run, train_engine)
from tunelab.train.resolve import resolve
from tunelab.train.rewards import load_rewards, score

METHODS = ("lora", "qlora")
BEFORE = "heldout_before.json"  # the held-out pass before training, whole (read back on --resume)
SUMMED = ("rollout_s", "prefill_s", "decode_s", "rollout_tokens")  # a step's totals over its micro-batches


@dataclass
class PromptRow:
    index: int
    prompt: object  # as the data gives it: text or chat messages (what the rewards receive)
    messages: list[dict]  # what the template renders
    columns: dict
    where: str
    ids: list[int] = field(default_factory=list)


@dataclass
class GrpoOutcome(Outcome):
    run_dir: Path
    result: TrainResult
    trainable: str
    first: dict  # the first and last step's statistics
    last: dict
    n_prompts: int = 0
    heldout: tuple[Pass, Pass] | None = None

    def summary_lines(self) -> list[str]:
        lines = [f"data: {self.n_prompts} prompts"]
        if self.heldout:
            b, a = (p.record()["heldout/reward"] for p in self.heldout)
            lines.append(f"held-out greedy reward ({len(self.heldout[0].total)} prompts): {b:.3f} -> {a:.3f}")
        if self.first and self.last:
            lines.append(f"mean reward: step 1 {self.first['reward']:.3f} -> step {self.last['step']} "
                         f"{self.last['reward']:.3f} (sampled, temperature > 0: noisy)")
        lines.append(self.result.speed_line())
        lines.append(f"run saved to [bold]{self.run_dir}[/bold] (metrics.jsonl, report.md, adapter/)")
        return lines


# ---- data ----------------------------------------------------------------------------------------------------
def _row(rec, i: int) -> PromptRow:
    d = dict(rec.data)
    if "prompt" in d:
        p = d.pop("prompt")
        if isinstance(p, str) and p.strip():
            return PromptRow(i, p, [{"role": "user", "content": p}], d, rec.where)
        if isinstance(p, list) and p and all(isinstance(m, dict) and "role" in m for m in p):
            return PromptRow(i, p, list(p), d, rec.where)
        raise TunelabError("'prompt' must be a non-empty text or a list of chat messages", where=rec.where)
    if "messages" in d:
        msgs = d.pop("messages")
        if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "user":
            return PromptRow(i, msgs, list(msgs), d, rec.where)
        raise TunelabError("'messages' must end with a user turn (the prompt to complete)", where=rec.where)
    raise TunelabError(f"a grpo record needs 'prompt' (or 'messages'); it has {sorted(d)}", where=rec.where,
                       hint="rename a field with data.columns, e.g. {prompt: question}")


def load_prompts(cfg: RunConfig, key: str = "train") -> list[PromptRow]:
    """The prompt rows of data.train (or data.validation: `key`): a path, or a list of {path, weight,
    columns} (weights repeat/subsample as for sft, deterministic in data.seed), every row's other fields
    kept for the rewards."""
    import random

    from tunelab.data.dataset import weighted

    d = cfg.data
    source = getattr(d, key)
    specs = source if isinstance(source, list) else [None]
    rows: list[PromptRow] = []
    for k, spec in enumerate(specs):
        path = source if spec is None else spec.path
        field_name = f"data.{key}" if spec is None else f"data.{key}[{k}]"
        recs = read_source(path, cfg.input_base(path, field_name), field_name)
        cols = spec.columns if spec is not None and spec.columns is not None else d.columns
        part = [_row(apply_columns(r, cols), 0) for r in recs]
        if spec is not None and spec.weight != 1:
            part = weighted(part, spec.weight, random.Random(d.seed * 1000 + k))
        rows += part
    if not rows:
        raise TunelabError("no prompts", where=f"data.{key}")
    if len(specs) > 1:
        random.Random(d.seed).shuffle(rows)
    keys = set(rows[0].columns)
    for r in rows:
        if set(r.columns) != keys:
            raise TunelabError(f"columns {sorted(r.columns)} differ from the first row's {sorted(keys)}", where=r.where,
                               hint="every prompt row needs the same columns (the rewards get them per row)")
    return [PromptRow(i, r.prompt, r.messages, r.columns, r.where) for i, r in enumerate(rows)]


def check_lengths(rows: list[PromptRow], max_length: int, max_new: int) -> None:
    """data.max_length bounds prompt + completion: a prompt of more than max_length - max_new tokens
    is refused in one line (naming the row) before any model work."""
    for r in rows:
        if len(r.ids) + max_new > max_length:
            raise TunelabError(f"the prompt is {len(r.ids)} tokens; with grpo.max_completion_length {max_new} "
                               f"that passes data.max_length {max_length}", where=r.where,
                               hint="raise data.max_length or shorten the prompt")


def train_and_heldout(cfg: RunConfig) -> tuple[list[PromptRow], list[PromptRow]]:
    """(training prompts, held-out prompts): data.validation, else data.val_split of data.train, else none."""
    rows = load_prompts(cfg)
    if cfg.data.validation:
        held = load_prompts(cfg, "validation")
    elif cfg.data.val_split:
        rows, held = split_heldout(rows, cfg.data.val_split, cfg.data.seed)
        if not rows:
            raise TunelabError(f"val_split {cfg.data.val_split} leaves no training prompts", where="data.val_split")
    else:
        return rows, []
    if set(held[0].columns) != set(rows[0].columns):
        raise TunelabError(f"held-out columns {sorted(held[0].columns)} differ from the training "
                           f"prompts' {sorted(rows[0].columns)}", where="data.validation",
                           hint="the rewards read the same columns on both")
    return ([PromptRow(i, r.prompt, r.messages, r.columns, r.where) for i, r in enumerate(rows)],
            [PromptRow(i, r.prompt, r.messages, r.columns, r.where) for i, r in enumerate(held)])


# ---- the objective -------------------------------------------------------------------------------------------
class GrpoObjective:
    """The engine's Objective for GRPO: a micro-batch is prompt indices; `loss_sum` samples, scores and
    returns (the loss, 1), so the engine's step loss is the mean of the micro-batches' GRPO losses."""

    def __init__(self, rows: list[PromptRow], rewards, engine, tok, template, g: GrpoConfig):
        self.rows, self.rewards, self.engine, self.tok, self.g = rows, rewards, engine, tok, g
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.stops = stop_ids(tok, template)
        self.stats: list[dict] = []
        self.tokens = 0

    def collate(self, examples: list[PromptRow]) -> dict[str, torch.Tensor]:
        return {"index": torch.tensor([r.index for r in examples])}

    def length(self, row: PromptRow) -> int:
        return len(row.ids)

    def trained_tokens(self, batch, count: int) -> int:
        return self.tokens

    def loss_sum(self, model, batch) -> tuple[torch.Tensor, int]:
        g = self.g
        rows = [self.rows[i] for i in batch["index"].tolist()]
        refresh_adapters(self.engine, model)  # the adapter as the last optimizer step left it
        seed = int(torch.randint(0, 2 ** 62, (1,)))  # from torch's RNG: checkpointed, so resumes sample alike
        t0 = time.perf_counter()
        ro = sample(self.engine, self.tok, [r.ids for r in rows], g.num_generations, g.max_completion_length,
                    self.stops, seeded_sampler(g.temperature, g.top_p, seed, self.engine.device))
        rollout_s = time.perf_counter() - t0
        n = len(ro.texts)
        rep = [r for r in rows for _ in range(g.num_generations)]
        cols = {k: [r.columns[k] for r in rep] for k in rows[0].columns}
        failed = {r.name: sum(r.fn.errors.values()) for r in self.rewards if hasattr(r.fn, "errors")}  # graders
        total, per = score(self.rewards, [r.prompt for r in rep], ro.texts, cols)
        dev = next(model.parameters()).device
        rewards = torch.tensor(total, dtype=torch.float32, device=dev)
        adv, std = group_advantages(rewards, g.num_generations, scale=g.loss_type != "dr_grpo")
        logp, mask = completion_logprobs(model, ro.prompt_ids, ro.completion_ids, self.pad_id, g.temperature)
        if g.mask_truncated_completions:
            mask = mask & ~torch.tensor(ro.truncated, device=dev).unsqueeze(1)
        ref = None
        if g.beta:
            with torch.no_grad(), model.disable_adapter():
                ref, _ = completion_logprobs(model, ro.prompt_ids, ro.completion_ids, self.pad_id, g.temperature)
        out = grpo_loss(logp, logp.detach(), adv, mask, g.loss_type, g.epsilon, g.beta, ref, g.max_completion_length)
        self.tokens = int(mask.sum())
        lengths = [len(c) for c in ro.completion_ids]
        st = {"reward": float(rewards.mean()), "reward_std": float(std.view(-1, g.num_generations)[:, 0].mean()),
              "frac_reward_zero_std": float(torch.isclose(std, torch.zeros_like(std)).float().mean()),
              "completion_length": sum(lengths) / n, "truncated": sum(ro.truncated) / n,
              "clip_ratio": out.clip_ratio, "rollout_s": rollout_s, "prefill_s": ro.prefill_s,
              "decode_s": ro.decode_s, "rollout_tokens": ro.new_tokens}
        if g.beta:
            st["kl"] = out.kl
        for name, vals in per.items():
            ok = [v for v in vals if not math.isnan(v)]
            st[f"rewards/{name}/mean"] = sum(ok) / len(ok) if ok else float("nan")
            st[f"rewards/{name}/std"] = statistics.stdev(ok) if len(ok) > 1 else 0.0
        for r in self.rewards:  # a grader's grades that failed in this micro-batch (scored 0, counted, not fatal)
            if r.name in failed:
                st[f"rewards/{r.name}/errors"] = sum(r.fn.errors.values()) - failed[r.name]
        self.stats.append(st)
        return out.loss, 1

    def pop_stats(self) -> dict:
        """The mean of each statistic over the micro-batches since the last call (times and tokens: their sum)."""
        if not self.stats:
            return {}
        keys, k = self.stats[0].keys(), len(self.stats)
        out = {key: round(sum(s[key] for s in self.stats) / (1 if key in SUMMED or key.endswith("/errors") else k), 5)
               for key in keys}
        self.stats = []
        return out


def cfg_template(cfg: RunConfig, tok):
    return build_template(cfg.data.template, tok, cfg.data.system, cfg.data.custom_template)


class StatsLogger:
    """The run's MetricsLogger, each step record extended with the objective's statistics; with held-out
    prompts and a numeric train.eval_every, a greedy held-out pass after every eval_every-th step."""

    def __init__(self, logger: MetricsLogger, objective: GrpoObjective, heldout=None, every: int | None = None):
        self.logger, self.objective, self.heldout, self.every = logger, objective, heldout, every
        self.passes: list[Pass] = []

    def __call__(self, record: dict) -> None:
        self.logger({**record, **self.objective.pop_stats()} if "loss" in record else record)
        if "loss" in record and self.heldout is not None and self.every and record["step"] % self.every == 0 \
                and is_main():  # the held-out pass runs on the main process only
            self.passes.append(self.heldout(record["step"]))
            self.logger(self.passes[-1].record())

    def __getattr__(self, name):
        return getattr(self.logger, name)


# ---- the recipe ----------------------------------------------------------------------------------------------
def run_grpo(cfg: RunConfig, quiet: bool = False, console: Console | None = None) -> GrpoOutcome:
    from tunelab.adapters.lora import trainable_summary

    console, run = setup_run(cfg, quiet, console, METHODS, checks=(lambda c: grpo_settings(c.grpo),))
    cfg = resolve(cfg)
    g = grpo_settings(cfg.grpo)
    cfg.grpo = g.model_dump(mode="json")  # config.yaml records every setting, defaults included
    rows, held = train_and_heldout(cfg)
    rewards = load_rewards(g.rewards, Path(cfg.config_dir or cfg.base_dir))
    base = load_base(cfg)
    tok = base.tok
    template = cfg_template(cfg, tok)
    for r in rows + held:
        r.ids, _ = encode_segments(tok, template.segments(r.messages, add_generation_prompt=True))
    check_lengths(rows + held, cfg.data.max_length, g.max_completion_length)
    console.print(f"data: {len(rows)} prompts x {g.num_generations} completions, {len(held)} held out; "
                  f"rewards: {', '.join(f'{x.name} (x{x.weight:g})' for x in rewards)}")
    resume_step = begin_run(run, cfg, base.rm.path, template, console)
    amp = autocast_dtype(cfg.train.precision, base.device)
    quantize_for_training(base, cfg, amp)
    model = adapt(base.model, cfg)
    trainable = trainable_summary(model)
    console.print(trainable)
    engine = rollout_engine(model)
    objective = GrpoObjective(rows, rewards, engine, tok, template, g)
    heldout = None
    if held:
        def heldout(step: int) -> Pass:
            return greedy_pass(engine, model, tok, held, rewards, g.max_completion_length, objective.stops, step)
    every = cfg.train.eval_every if isinstance(cfg.train.eval_every, int) else None
    logger = StatsLogger(MetricsLogger(run, cfg.train.report_to), objective, heldout, every)
    before = None
    if heldout is not None and is_main():
        kept = run.path / BEFORE
        if resume_step is not None and kept.exists():  # a resumed run: the base's pass as the first run made it
            before = Pass.from_json(kept.read_text(encoding="utf-8"))
        else:
            before = heldout(0)
            run.write_text(BEFORE, before.to_json())
            if resume_step is None:
                logger(before.record())
    per_step = g.prompts_per_step or cfg.train.batch_size
    train_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": per_step,
                                                                            "eval_every": "never"})})
    t = time.perf_counter()
    result = train_engine(model, rows, [], train_cfg, run, logger, quiet, resume_step, objective=objective,
                          before_step=base.before_step)
    seconds = time.perf_counter() - t
    after = None
    if before is not None:  # main process only (before is None elsewhere)
        after = logger.passes[-1] if logger.passes and logger.passes[-1].step == result.steps else None
        if after is None:
            after = heldout(result.steps)
            run.log(after.record())
    steps = [r for r in run.metrics() if "reward" in r and "loss" in r]
    first, last = (steps[0], steps[-1]) if steps else ({}, {})
    if is_main():
        run.save_weights(model, cfg.method.name, tok, source=cfg.model.name)
        write_report(run, cfg, g, steps, seconds, (before, after) if after is not None else None,
                     {x.name: x.weight for x in rewards})
        if after is not None:
            run.write_text("heldout.jsonl", "".join(json.dumps(x) + "\n" for x in rows_record(before, after, held)))
    outcome = GrpoOutcome(run.path, result, trainable, first, last, len(rows), after and (before, after))
    finish_run(run, result, cfg.train.keep_checkpoints)
    return outcome


def write_report(run, cfg: RunConfig, g: GrpoConfig, steps: list[dict], seconds: float,
                 passes: tuple[Pass, Pass] | None = None, weights: dict | None = None) -> None:
    lines = [f"# GRPO run {run.path.name}", "",
             f"model {cfg.model.name}, method {cfg.method.name}, loss_type {g.loss_type}, G = {g.num_generations}, "
             f"beta {g.beta}, epsilon {g.epsilon}, temperature {g.temperature}, "
             f"max_completion_length {g.max_completion_length}", "",
             f"{len(steps)} steps in {seconds:.0f}s (rollouts included)", ""]
    if passes is not None:
        lines += report_lines(*passes, weights or {})
    lines += ["## Steps (sampled rollouts)", "",
             "| step | loss | reward | reward_std | zero-std groups | completion length | truncated | sampling s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in steps:
        lines.append(f"| {s['step']} | {s['loss']:.4f} | {s['reward']:.3f} | {s['reward_std']:.3f} | "
                     f"{s['frac_reward_zero_std']:.0%} | {s['completion_length']:.1f} | {s['truncated']:.0%} | "
                     f"{s['rollout_s']:.1f} |")
    run.write_text("report.md", "\n".join(lines) + "\n")
