"""The `classify:` section (task: classify) and the check of `train.metric_for_best` against the task.

    classify:
      labels: [neg, neutral, pos]   # the id order; default: the training labels sorted
      class_weights: auto           # auto | none | {label: weight}: the cross-entropy's per-class weights
      sampler: shuffle              # shuffle | balanced (every class oversampled to the largest's count)
      offsets: false                # true: tune per-class logit offsets on validation (macro-F1); predict adds them
      setfit: {pairs_per_example: 8, head_c: 1.0}   # or true; absent = the head trained with the model (method)

class_weights auto is sklearn's "balanced": w_c = n_samples / (n_classes * count_c), e.g. counts
(64, 27, 9) -> w = 100 / (3 * count) = (0.521, 1.235, 3.704). A mapping gives a weight per label
(labels it leaves out weigh 1). The loss and the offsets: train/class_balance.py, eval/logit_offsets.py.
`classify.setfit` (SetFit-style, train/setfit.py): tune every weight of the encoder contrastively on
labelled pairs, then fit a logistic-regression head on its frozen, mean-pooled vectors. It needs
`method.name: full` (it trains every encoder weight); `train.lr`, `train.epochs` and `train.batch_size`
drive the contrastive stage, and when left out they are SetFit's 2e-5, 1 and 16 (not the LoRA/full ones).
Defaults (class_weights auto, sampler shuffle, offsets false, setfit off, metric_for_best macro_f1) are the options
measured best on an imbalanced real set: docs/classify.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from tunelab.config.sections import _Section

# train.metric_for_best: the metrics each task's validation reports; auto takes the first
METRICS_BY_TASK = {"classify": ("macro_f1", "accuracy", "loss")}
DEFAULT_METRICS = ("loss",)


class SetFitConfig(_Section):
    """classify.setfit: the pairs each training example anchors and the logistic head's inverse L2 strength."""

    # each example anchors this many positive and this many negative pairs (SetFit's num_iterations)
    pairs_per_example: int = Field(8, ge=1)
    head_c: float = Field(1.0, gt=0)  # sklearn's LogisticRegression C: the head's L2 penalty is ||W||^2 / (2 C)


# classify.setfit's stage-one defaults where the config leaves train.* out (SetFit's: lr 2e-5, 1 epoch, batch 16)
SETFIT_TRAIN_DEFAULTS = {"lr": 2e-5, "epochs": 1, "batch_size": 16}


class ClassifyConfig(_Section):
    """task: classify. Labels come from the data (sorted) unless listed here (fixes their order)."""

    labels: list[str] | None = None
    metric: Literal["accuracy", "macro_f1"] = "accuracy"  # reported first (keep-best: train.metric_for_best)
    class_weights: Literal["auto", "none"] | dict[str, float] = "auto"
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    # off by default: tuned on a small validation split they lowered test macro-F1 (docs/classify.md)
    offsets: bool = False
    setfit: SetFitConfig | None = None  # true = SetFitConfig's defaults

    @field_validator("setfit", mode="before")
    @classmethod
    def _setfit(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return {} if v else None
        if v is not None and not isinstance(v, (dict, SetFitConfig)):
            raise ValueError(f"{v!r} is not true, false or a mapping {{pairs_per_example, head_c}}")
        return v

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


def settle_setfit(cfg) -> None:
    """With `classify.setfit`: refuse a method other than full (one line), and give the train.* values the
    config leaves out SetFit's defaults (`SETFIT_TRAIN_DEFAULTS`)."""
    from tunelab.errors import TunelabError

    if cfg.classify.setfit is None:
        return
    if cfg.task != "classify":
        raise TunelabError(f"classify.setfit is an option of task classify, not {cfg.task}", where="classify.setfit",
                           hint="set task: classify, or remove classify.setfit")
    if cfg.method.name != "full":
        raise TunelabError(f"classify.setfit tunes every weight of the encoder, so method '{cfg.method.name}' "
                           "does not apply", where="method.name", hint="set method.name: full")
    for key, value in SETFIT_TRAIN_DEFAULTS.items():
        if key not in cfg.train.model_fields_set:
            setattr(cfg.train, key, value)
