"""One recipe module per task; `run_task` picks it from `cfg.task`.

Every recipe has the same contract: `run_<task>(cfg, quiet, console) -> outcome`, where the
outcome (a `_common.Outcome`) has `run_dir`, `summary_lines() -> list[str]` and `samples_table()`
(a (title, rows) table or None): what `tunelab train` prints, the table first. The recipe writes a
complete run directory (config.yaml, metrics.jsonl, report.md, weights, DONE last).

Each recipe reads top to bottom as setup / before / train / save, with the steps they share in
`_common` (setup_run, load_base, begin_run, quantize_for_training, adapt, train_engine, finish_run),
the TRL wiring of reward and dpo in `preference`, and the report writers in `tunelab.train.reports`.
"""

from __future__ import annotations

from importlib import import_module

RECIPES = {
    "sft": ("tunelab.train.recipes.sft", "run_sft"),
    "classify": ("tunelab.train.recipes.classify", "run_classify"),
    "pretrain": ("tunelab.train.recipes.pretrain", "run_pretrain"),
    "reward": ("tunelab.train.recipes.reward", "run_reward"),
    "dpo": ("tunelab.train.recipes.dpo", "run_dpo"),
    "grpo": ("tunelab.train.recipes.grpo", "run_grpo"),
}


def run_task(cfg, quiet: bool = False, console=None):
    module, fn = RECIPES[cfg.task]
    return getattr(import_module(module), fn)(cfg, quiet=quiet, console=console)
