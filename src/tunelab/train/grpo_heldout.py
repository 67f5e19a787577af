"""The held-out pass of task grpo: the reward of the greedy reply on prompts the run does not train on.

Held-out prompts: data.validation (rows shaped as data.train's), else a data.val_split of the train rows
(random.Random(data.seed) shuffles the indices, the first round(n x val_split) are held out: the other
tasks' rule), removed from training.

A pass (`greedy_pass`) decodes every held-out prompt greedily (temperature 0) on the rollout engine with
the adapter as it stands (`refresh_adapters` first), `BATCH` prompts per engine batch, and scores the
replies with the run's rewards. It runs before the first step (step 0), every train.eval_every steps when
that is a number, and after the last step. metrics.jsonl gets one record per pass:

    {"step": s, "heldout/reward": mean total, "heldout/<name>": mean of that reward, "heldout_n": n,
     "heldout_s": seconds}

and heldout.jsonl the first and last pass per prompt (reply, total, per-reward scores) for reading.
The first pass is also kept whole in heldout_before.json, so a resumed run (`--resume`) reads it back
instead of decoding the base again.

Intervals (`mean_interval`, `paired_interval`): resample the prompts with replacement 1,000 times
(random.Random(0)), take the 2.5th and 97.5th percentiles of the resampled mean of the scores, or of the
after - before differences (the same prompts in both samples: paired). eval/bootstrap.py computes
the same for the eval layer, which train may not import.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass

import torch

BATCH = 32  # held-out prompts per engine batch
RESAMPLES = 1000


@dataclass
class Pass:
    step: int
    texts: list[str]
    total: list[float]
    per: dict[str, list[float]]  # reward name -> its score per prompt (NaN: no score)
    seconds: float

    def to_json(self) -> str:
        return json.dumps({"step": self.step, "texts": self.texts, "total": self.total, "per": self.per,
                           "seconds": self.seconds})

    @classmethod
    def from_json(cls, text: str) -> "Pass":
        d = json.loads(text)
        return cls(d["step"], d["texts"], d["total"], d["per"], d["seconds"])

    def record(self) -> dict:
        out = {"step": self.step, "heldout/reward": round(_mean(self.total), 5)}
        out.update({f"heldout/{k}": round(_mean(v), 5) for k, v in self.per.items()})
        return {**out, "heldout_n": len(self.total), "heldout_s": round(self.seconds, 2)}


def _mean(values: list[float]) -> float:
    ok = [v for v in values if not math.isnan(v)]
    return sum(ok) / len(ok) if ok else float("nan")


def split_heldout(rows: list, val_split: float, seed: int) -> tuple[list, list]:
    """(train rows, held-out rows): the first round(n x val_split) of the seeded shuffled indices held out."""
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    held = set(idx[:max(1, round(len(rows) * val_split))])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


@torch.no_grad()
def greedy_pass(engine, model, tok, rows: list, rewards, max_new: int, stops: set[int], step: int) -> Pass:
    """Greedy replies of `rows` (PromptRow: ids, prompt, columns) with `model`'s current adapter, scored."""
    from tunelab.infer.sampling import Sampler
    from tunelab.train.grpo_rollout import refresh_adapters, sample
    from tunelab.train.rewards import score

    t0 = time.perf_counter()
    refresh_adapters(engine, model)
    texts: list[str] = []
    for i in range(0, len(rows), BATCH):
        part = rows[i:i + BATCH]
        texts += sample(engine, tok, [r.ids for r in part], 1, max_new, stops, Sampler(0.0)).texts
    cols = {k: [r.columns[k] for r in rows] for k in rows[0].columns}
    total, per = score(rewards, [r.prompt for r in rows], texts, cols)
    return Pass(step, texts, total, per, time.perf_counter() - t0)


def _percentiles(stats: list[float]) -> tuple[float, float]:
    s = sorted(x for x in stats if x == x)
    if not s:
        return float("nan"), float("nan")
    return s[max(0, math.floor(0.025 * (len(s) - 1)))], s[min(len(s) - 1, math.ceil(0.975 * (len(s) - 1)))]


def mean_interval(values: list[float]) -> tuple[float, float]:
    """Bootstrap 95% interval of the mean of `values` (NaN entries left out of each resample's mean)."""
    if not values:
        return float("nan"), float("nan")
    rng, n = random.Random(0), len(values)
    return _percentiles([_mean([values[rng.randrange(n)] for _ in range(n)]) for _ in range(RESAMPLES)])


def paired_interval(before: list[float], after: list[float]) -> tuple[float, float]:
    """Bootstrap 95% interval of mean(after - before) over the same prompts."""
    return mean_interval([a - b for a, b in zip(after, before)])


def report_lines(first: Pass, last: Pass, weights: dict[str, float]) -> list[str]:
    """The report.md table: per reward and for the total, before -> after with intervals."""
    lines = [f"## Held-out prompts: reward of the greedy reply ({len(first.total)} prompts)", "",
             f"step {first.step} (before training) -> step {last.step}; 95% bootstrap intervals over the prompts "
             f"({RESAMPLES} resamples), the change paired per prompt.", "",
             "| reward | weight | before | after | change |", "|---|---:|---|---|---|"]
    series = [(k, f"{weights.get(k, 1.0):g}", first.per[k], last.per[k]) for k in first.per]
    series.append(("total", "", first.total, last.total))
    for name, w, b, a in series:
        (bl, bh), (al, ah), (dl, dh) = mean_interval(b), mean_interval(a), paired_interval(b, a)
        lines.append(f"| {name} | {w} | {_mean(b):.3f} [{bl:.3f}, {bh:.3f}] | {_mean(a):.3f} [{al:.3f}, {ah:.3f}] "
                     f"| {_mean(a) - _mean(b):+.3f} [{dl:+.3f}, {dh:+.3f}] |")
    return lines + [""]


def rows_record(first: Pass, last: Pass, rows: list) -> list[dict]:
    """heldout.jsonl: per prompt, the greedy reply and its scores before and after."""
    out = []
    for i, r in enumerate(rows):
        out.append({"prompt": r.prompt, **{k: v for k, v in r.columns.items()},
                    "before": {"reply": first.texts[i], "reward": first.total[i],
                               **{k: v[i] for k, v in first.per.items()}},
                    "after": {"reply": last.texts[i], "reward": last.total[i],
                              **{k: v[i] for k, v in last.per.items()}}})
    return out
