"""One recipe module per task; `run_task` picks it from `cfg.task`.

Every recipe has the same contract: `run_<task>(cfg, quiet, console) -> outcome`, where the
outcome has `run_dir` and `summary_lines() -> list[str]` (what `tunelab train` prints), and the
recipe writes a complete run directory (config.yaml, metrics.jsonl, report.md, weights, DONE last).
"""

from __future__ import annotations

from importlib import import_module

RECIPES = {
    "sft": ("tunelab.train.recipes.sft", "run_sft"),
    "classify": ("tunelab.train.recipes.classify", "run_classify"),
    "pretrain": ("tunelab.train.recipes.pretrain", "run_pretrain"),
    "reward": ("tunelab.train.recipes.reward", "run_reward"),
    "dpo": ("tunelab.train.recipes.dpo", "run_dpo"),
}


def run_task(cfg, quiet: bool = False, console=None):
    module, fn = RECIPES[cfg.task]
    return getattr(import_module(module), fn)(cfg, quiet=quiet, console=console)
