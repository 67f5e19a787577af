"""Sequence classification (task: classify) on any encoder or decoder: LoRA, full or freeze.

setup:  data ({"text", "label"} records) -> label set (sorted, or `classify.labels` order)
        -> base + a new head (`AutoModelForSequenceClassification`, id2label/label2id) -> tokenize
        -> class weights (`classify.class_weights`) and, with `classify.sampler: balanced`, the training
           set oversampled to equal class counts (train/class_balance.py)
before: validation loss / accuracy / macro-F1 of the untrained head
train:  adapt -> engine.train_loop with `ClassifyObjective` (keep_best / early stopping follow
        `train.metric_for_best`: macro_f1 unless set)
          lora:   peft task_type SEQ_CLS; the head is trained in full and saved in the adapter
                  (`modules_to_save`), so the adapter alone rebuilds the classifier
          full:   every weight
          freeze: the head (+ the pooler, if any) and the last `method.freeze_layers` blocks
after:  `classify.offsets`: per-class logit offsets tuned on validation for macro-F1 (eval/logit_offsets.py)
save:   config.yaml, labels.json, tokenizer/, adapter/ (or model/), offsets.json, metrics.jsonl, report.md,
        confusion.png, loss.png, DONE (last)

With `classify.setfit` set, `run_classify` hands the run to classify_setfit.py (the encoder tuned on
pairs, then a logistic head). The objective, outcome and data checks both use: classify_common.py
(Loss = sum_i w_{y_i} CE(logits_i, y_i) over a micro-batch / its size; validation loss unweighted).
"""

from __future__ import annotations

import json

import torch
from rich.console import Console

from tunelab.config import RunConfig
from tunelab.eval.classification import flat_metrics
from tunelab.eval.logit_offsets import FILE as OFFSETS_FILE, tune_offsets
from tunelab.infer.classify import load_sequence_classifier
from tunelab.methods import method_of
from tunelab.runtime.precision import autocast_dtype
from tunelab.train.class_balance import class_weights, oversample
from tunelab.train.distributed import is_main
from tunelab.train.loggers import MetricsLogger
from tunelab.train.recipes._common import finish_run, setup_run, train_engine
from tunelab.train.recipes.classify_common import (  # noqa: F401  (re-exported: tests and callers import them here)
    ClassifyObjective,
    ClassifyOutcome,
    LabeledIds,
    begin_classify_run,
    label_set,
    load_classify_splits,
    tokenize_examples,
)
from tunelab.train.reports import write_classify_report
from tunelab.train.resolve import resolve

METHODS = ("lora", "full", "freeze")


# ---- adapting ------------------------------------------------------------------------------------------------
def trainable_head(model, head: list[str]) -> list[str]:
    """The head modules plus the base's pooler when it has one (BERT: pooler -> dropout -> classifier)."""
    names = list(head)
    for name, _ in model.named_modules():
        if name.endswith(".pooler") and name.count(".") == 1 and name not in names:
            names.append(name)
    return names


def adapt(model, cfg: RunConfig, head: list[str]):
    """Apply `method` (lora | full | freeze, `Method.adapt`); returns the model to train. An adapter
    method trains the head whole (peft's modules_to_save); any other makes the head (and a pooler) train."""
    from tunelab.adapters.lora import target_modules
    from tunelab.train.activation_ckpt import enable as enable_checkpointing, wants_checkpointing

    m, method = cfg.method, method_of(cfg)
    checkpointing = wants_checkpointing(cfg, model)
    if method.adapters:
        # the head is trained whole (modules_to_save), so it is no LoRA target
        leaves = {h.split(".")[-1] for h in head}
        targets = target_modules(model, m.target_modules)
        targets = [t for t in targets if t not in leaves] if isinstance(targets, list) else targets
        model = method.adapt(model, m.model_copy(update={"target_modules": targets}), task_type="SEQ_CLS",
                             modules_to_save=head)
    else:
        model = method.adapt(model, m, task_type="SEQ_CLS")  # full: as is; freeze: the last blocks only
        mods = dict(model.named_modules())
        for name in trainable_head(model, head):  # (full: these train already)
            for p in mods[name].parameters():
                p.requires_grad_(True)
    if checkpointing:
        enable_checkpointing(model)
    return model


# ---- the recipe ----------------------------------------------------------------------------------------------
def run_classify(cfg: RunConfig, quiet: bool = False, console: Console | None = None) -> ClassifyOutcome:
    from tunelab.adapters.lora import count_params, trainable_summary

    if cfg.classify.setfit is not None:  # the encoder tuned on pairs, then a logistic head
        from tunelab.train.recipes.classify_setfit import run_setfit

        return run_setfit(cfg, quiet, console)
    # ---- setup: data first, so bad input fails before any model loads or anything is written -------------
    console, run = setup_run(cfg, quiet, console, METHODS, method_hint="use one of")
    cfg = resolve(cfg)  # every auto settled before anything loads: config.yaml records them (train/resolve.py)
    train_ex, val_ex = load_classify_splits(cfg)
    labels = label_set(cfg, train_ex, val_ex)
    torch.manual_seed(cfg.train.seed)  # the new head's initial weights
    model, tok, head = load_sequence_classifier(cfg.model.name, labels, dtype=cfg.model.dtype, device=cfg.model.device)
    d = cfg.data
    train_tok = tokenize_examples(tok, train_ex, labels, d.max_length, d.truncation_side)
    val_tok = tokenize_examples(tok, val_ex, labels, d.max_length, d.truncation_side)
    console.print(f"data: {len(train_tok)} train / {len(val_tok)} validation examples, {len(labels)} labels")
    c = cfg.classify
    weights = class_weights(c.class_weights, labels, [e.label for e in train_tok])
    if c.sampler == "balanced":
        train_tok = oversample(train_tok, [e.label for e in train_tok], cfg.train.seed)
        console.print(f"balanced sampler: {len(train_tok)} training examples per epoch (every class oversampled "
                      f"to the largest's count)")
    resume_step = begin_classify_run(run, cfg, tok, labels, head, console)
    amp = autocast_dtype(cfg.train.precision, next(model.parameters()).device)
    objective = ClassifyObjective(tok.pad_token_id, labels, cfg.train.batch_size, weights)
    logger = MetricsLogger(run, cfg.train.report_to)

    # ---- before: the untrained head ------------------------------------------------------------------------
    before = objective.measure(model, val_tok, amp) if val_tok else {}
    if before:
        console.print(f"untrained head: val loss {before['val_loss']:.3f}, accuracy {before['accuracy']:.3f}")
        if resume_step is None:
            logger({"step": 0, "epoch": 0, "event": "before", "val_loss": round(before["val_loss"], 5),
                    **{k: round(v, 5) for k, v in flat_metrics(before).items()}})

    # ---- train ---------------------------------------------------------------------------------------------
    model = adapt(model, cfg, head)
    trainable = trainable_summary(model)
    console.print(trainable)
    result = train_engine(model, train_tok, val_tok, cfg, run, logger, quiet, resume_step, objective=objective)

    # ---- after + save --------------------------------------------------------------------------------------
    val_logits = objective.logits(model, val_tok, amp) if val_tok else None
    after = objective.measure(model, val_tok, amp, val_logits) if val_tok else {}
    offsets = tune_offsets(val_logits, [e.label for e in val_tok], labels) if val_tok and c.offsets else {}
    if is_main():
        model.save_pretrained(str(run.adapter_dir if method_of(cfg).adapters else run.model_dir))
        if offsets:
            run.write_text(OFFSETS_FILE, json.dumps({"labels": labels, **offsets}, indent=2) + "\n")
    outcome = ClassifyOutcome(run.path, result, labels, trainable, before, after, offsets, len(train_tok),
                              len(val_tok), count_params(model)[0])
    if is_main():
        write_classify_report(run, cfg, outcome)
    finish_run(run, result, cfg.train.keep_checkpoints)
    return outcome
