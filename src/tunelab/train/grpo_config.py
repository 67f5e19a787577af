"""The `grpo:` section of a task-grpo config, validated (config.py keeps it as a mapping: that module is
at its 400-line limit; the section's schema lives here, beside the recipe that reads it).

    grpo:
      num_generations: 4            G completions sampled per prompt (>= 2: a group needs a spread)
      max_completion_length: 64     new tokens per completion at most
      temperature: 1.0, top_p: 1.0  sampling (infer/sampling.py); log-probs use logits / temperature, as TRL
      beta: 0.0                     weight of the k3 KL to the adapter-free model (0: no reference pass)
      loss_type: grpo               grpo | dr_grpo | dapo (train/grpo_loss.py)
      epsilon: 0.2                  clip range of the ratio: [1 - eps, 1 + eps]
      prompts_per_step: null        prompts per micro-batch (null: train.batch_size)
      mask_truncated_completions: false   completions without a stop token get no loss
      rewards: [{name | function | grader, weight, column, pattern, target}]   train/rewards.py
                                    (grader: an OpenAI grader object, train/graders/)

`grpo_settings(cfg)` returns the validated GrpoConfig, or raises a one-line TunelabError naming the key
(an unknown key gets the closest valid name, as config.py does for the other sections).
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tunelab.errors import TunelabError
from tunelab.train.graders import validate_grader


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewardSpec(_Section):
    """One reward: a built-in (`name`: exact_match | contains | regex | length | json_valid), a python
    function (`function`: "module:function" or "path.py:function", the path relative to the config's
    folder) or an OpenAI grader object (`grader`: {type: string_check | text_similarity | score_model |
    python | multi, ...}, checked by train/graders' validate_grader); its score counts `weight` times."""

    name: str | None = None
    function: str | None = None
    grader: dict | None = None
    weight: float = 1.0
    column: str | None = None  # exact_match, contains: the data column holding the expected text
    pattern: str | None = None  # regex: the format to match; exact_match: extract group 1 (or the match) first
    target: int | None = Field(None, ge=1)  # length: the target number of words

    @model_validator(mode="after")
    def _one(self) -> "RewardSpec":
        if sum(x is not None for x in (self.name, self.function, self.grader)) != 1:
            raise ValueError("a reward has one of 'name' (a built-in), 'function' (module:function) or "
                             "'grader' (an OpenAI grader object)")
        return self


class GrpoConfig(_Section):
    num_generations: int = Field(4, ge=2)
    max_completion_length: int = Field(64, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    beta: float = Field(0.0, ge=0)
    loss_type: Literal["grpo", "dr_grpo", "dapo"] = "grpo"
    epsilon: float = Field(0.2, gt=0, lt=1)
    prompts_per_step: int | None = Field(None, ge=1)
    mask_truncated_completions: bool = False
    rewards: list[RewardSpec] = Field(default_factory=list)


def grpo_settings(section: dict) -> GrpoConfig:
    """The validated `grpo:` mapping (see the module docstring)."""
    if not isinstance(section, dict):
        raise TunelabError("the grpo section must be a mapping", where="grpo")
    fields = list(GrpoConfig.model_fields)
    for key in section:
        if key not in fields:
            close = get_close_matches(str(key), fields, n=1, cutoff=0.5)
            raise TunelabError("unknown key", where=f"grpo.{key}",
                               hint=f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(fields)}")
    try:
        g = GrpoConfig.model_validate(section)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise TunelabError(err["msg"].removeprefix("Value error, "), where=f"grpo.{loc}",
                           hint="see docs/grpo.md") from None
    for i, r in enumerate(g.rewards):  # a grader's own fields, before any model loads
        if r.grader is not None:
            validate_grader(r.grader, f"grpo.rewards[{i}].grader")
    return g
