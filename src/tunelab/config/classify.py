"""The `classify:` section (task: classify) and the check of `train.metric_for_best` against the task.

    classify:
      labels: [neg, neutral, pos]   # the id order; default: the training labels sorted
      class_weights: auto           # auto | none | {label: weight}: the cross-entropy's per-class weights
      sampler: shuffle              # shuffle | balanced (every class oversampled to the largest's count)
      offsets: false                # true: tune per-class logit offsets on validation (macro-F1); predict adds them

class_weights auto is sklearn's "balanced": w_c = n_samples / (n_classes * count_c), e.g. counts
(64, 27, 9) -> w = 100 / (3 * count) = (0.521, 1.235, 3.704). A mapping gives a weight per label
(labels it leaves out weigh 1). The loss and the offsets: train/class_balance.py, eval/logit_offsets.py.
Defaults (class_weights auto, sampler shuffle, offsets false, metric_for_best macro_f1) are the options
measured best on an imbalanced real set: docs/classify.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from tunelab.config.sections import _Section

# train.metric_for_best: the metrics each task's validation reports; auto takes the first
METRICS_BY_TASK = {"classify": ("macro_f1", "accuracy", "loss")}
DEFAULT_METRICS = ("loss",)


class ClassifyConfig(_Section):
    """task: classify. Labels come from the data (sorted) unless listed here (fixes their order)."""

    labels: list[str] | None = None
    metric: Literal["accuracy", "macro_f1"] = "accuracy"  # reported first (keep-best: train.metric_for_best)
    class_weights: Literal["auto", "none"] | dict[str, float] = "auto"
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    # off by default: tuned on a small validation split they lowered test macro-F1 (docs/classify.md)
    offsets: bool = False

    @field_validator("class_weights", mode="before")
    @classmethod
    def _weights(cls, v: Any) -> Any:
        if not isinstance(v, (str, dict)) or (isinstance(v, str) and v not in ("auto", "none")):
            raise ValueError(f"{v!r} is not auto, none or a mapping {{label: weight}}")
        if isinstance(v, dict):
            bad = [k for k, w in v.items() if not (isinstance(w, (int, float)) and w > 0)]
            if bad or not v:
                raise ValueError(f"every weight must be a number > 0 (label {bad[0]!r})" if bad else
                                 "an empty mapping; give auto, none or {label: weight}")
        return v


def check_metric_for_best(cfg) -> None:
    """Settle `train.metric_for_best: auto` for the task (macro_f1 for classify, else loss) and refuse a
    metric the task's validation does not report (a one-line TunelabError)."""
    from tunelab.errors import TunelabError

    allowed = METRICS_BY_TASK.get(cfg.task, DEFAULT_METRICS)
    m = cfg.train.metric_for_best
    if m == "auto":
        cfg.train.metric_for_best = allowed[0]
    elif m not in allowed:
        raise TunelabError(f"{m} is not a validation metric of task {cfg.task}", where="train.metric_for_best",
                           hint=f"use one of: {', '.join(allowed)}")
