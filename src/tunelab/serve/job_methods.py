"""The methods of a fine-tuning job (OpenAI's `method.type`), one object each: what it trains, on which
files, with which hyperparameters, and what it adds to the run's config.

    supervised     task sft    chat examples               n_epochs batch_size learning_rate_multiplier
    dpo            task dpo    preference pairs            ... + beta -> preference.beta
    reinforcement  task grpo   prompts + any columns       ... + compute_multiplier, eval_interval,
                               (OpenAI's RFT lines)        eval_samples, reasoning_effort; the grader is
                                                           the run's one reward (grpo.rewards)

Every method also takes tunelab's `finetuning_type` (method.name of the run; reinforcement: lora or
qlora, what task grpo trains). A reinforcement job maps OpenAI's names onto task grpo:

    n_epochs                  train.epochs
    batch_size                grpo.prompts_per_step (prompts per optimizer step; each sampled G times)
    learning_rate_multiplier  train.lr = default_lr(method.name) x multiplier (as every method)
    compute_multiplier        grpo.num_generations G = max(2, round(4 x multiplier))  (auto: 1 -> G = 4):
                              the exploration budget, G samples per prompt
    validation_file           grpo's held-out pass (data.validation): the greedy reply's reward before
                              training, every eval_interval steps and after (events: heldout_reward)
    eval_interval             train.eval_every (auto: before and after training only)
    eval_samples              only "auto": the held-out pass is greedy, one reply per prompt
    reasoning_effort          only "default": tunelab's models have no reasoning-effort setting

Used by the request checks (serve/protocol/jobs.py), the file checks (serve/jobs_api.py) and the
runner's config (serve/job_runner.job_config); nothing else compares a method's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

GENERATIONS_AT_1 = 4  # grpo.num_generations at compute_multiplier 1 (GrpoConfig's default)


def num_generations(compute_multiplier: float) -> int:
    """G = max(2, round(GENERATIONS_AT_1 x compute_multiplier)): 0.5 -> 2, 1 -> 4, 2 -> 8."""
    return max(2, round(GENERATIONS_AT_1 * compute_multiplier))


@dataclass(frozen=True)
class JobMethod:
    """One `method.type`: its recipe's task, the file kinds it trains on (files_api.file_kind), its
    hyperparameter names (protocol/jobs.HYPER), the finetuning types it takes, the hyperparameters
    that take one value only (name: (that value, why)), what else its `method.<type>` object holds
    besides hyperparameters, and `config(cfg, job)`: its part of the run's config."""

    task: str
    kinds: tuple[str, ...]
    kind_text: str
    hyper: tuple[str, ...]
    finetuning_types: tuple[str, ...] = ("lora", "qlora", "full")
    fixed: dict[str, tuple[str, str]] = field(default_factory=dict)
    extra: tuple[str, ...] = ()  # keys of method.<type> besides hyperparameters (all required)
    validation: str | None = None  # why a validation_file is refused; None: taken
    config: Callable[[dict, dict], None] = lambda cfg, job: None


COMMON = ("n_epochs", "batch_size", "learning_rate_multiplier", "finetuning_type")


def _dpo(cfg: dict, job: dict) -> None:
    cfg["preference"] = {"beta": job["hyperparameters"]["beta"]}


def _reinforcement(cfg: dict, job: dict) -> None:
    hp = job["hyperparameters"]
    if hp["eval_interval"] != "auto":  # a held-out pass every n steps (with a validation_file; before and after: always)
        cfg["train"]["eval_every"] = hp["eval_interval"]
    cfg["grpo"] = {"num_generations": num_generations(hp["compute_multiplier"]), "prompts_per_step": hp["batch_size"],
                   "rewards": [{"grader": job["method"]["grader"], "weight": 1.0}]}


GREEDY = "the held-out pass is greedy: one reply per validation prompt"
METHODS: dict[str, JobMethod] = {
    "supervised": JobMethod("sft", ("sft",), "chat examples (messages, prompt/completion, ...)", COMMON),
    "dpo": JobMethod("dpo", ("preference", "openai_dpo"),
                     "preference pairs (prompt, chosen, rejected; or OpenAI's input / preferred_output)",
                     COMMON + ("beta",), config=_dpo),
    "reinforcement": JobMethod(
        "grpo", ("prompts",), "prompts: OpenAI's RFT lines, messages ending with a user turn, with any other fields",
        COMMON + ("compute_multiplier", "eval_interval", "eval_samples", "reasoning_effort"),
        finetuning_types=("lora", "qlora"),
        fixed={"eval_samples": ("auto", GREEDY),
               "reasoning_effort": ("default", "tunelab's models have no reasoning-effort setting")},
        extra=("grader",), config=_reinforcement),
}
