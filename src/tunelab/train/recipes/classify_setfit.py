"""task: classify with `classify.setfit`: contrastive tuning of the encoder on labelled pairs, then a
logistic-regression head on its frozen mean-pooled vectors (the formulas: train/setfit.py).

setup:  data -> label set (as the head recipe) -> the encoder (`AutoModel` of model.name, every weight
        trained) + tokenizer -> token ids -> class weights (`classify.class_weights`, used by the head);
        `classify.sampler: balanced` oversamples the pair anchors (every class anchors as many pairs)
before: a head fitted on the untuned encoder's vectors: its validation metrics
train:  `make_pairs` (classify.setfit.pairs_per_example) -> `train_contrastive` (train.lr, epochs, batch_size)
after:  the head fitted on the tuned vectors (class weights, classify.setfit.head_c) -> validation metrics;
        `classify.offsets` tunes logit offsets on them, as for the head recipe
save:   config.yaml, labels.json, tokenizer/, embedder/, pooled_head.safetensors, offsets.json, metrics.jsonl,
        report.md, confusion.png, loss.png, DONE (last): `Classifier.from_run` reads it like any classify run

No keep_best or early stopping: stage one has no per-epoch validation (the head is fitted once, at the end).
"""

from __future__ import annotations

import json

from rich.console import Console

from tunelab.config import RunConfig
from tunelab.eval.classification import flat_metrics
from tunelab.eval.logit_offsets import FILE as OFFSETS_FILE, tune_offsets
from tunelab.infer.classify import ensure_pad
from tunelab.infer.pooled_classifier import EMBEDDER_DIR, HEAD_FILE, PooledHeadClassifier
from tunelab.runtime.precision import autocast_dtype
from tunelab.train.class_balance import class_weights, oversample
from tunelab.train.distributed import is_main
from tunelab.train.loggers import MetricsLogger
from tunelab.train.recipes._common import finish_run, setup_run
from tunelab.train.recipes.classify_common import (
    ClassifyObjective,
    ClassifyOutcome,
    begin_classify_run,
    label_set,
    load_classify_splits,
    tokenize_examples,
)
from tunelab.train.reports import write_classify_report
from tunelab.train.resolve import resolve
from tunelab.train.result import TrainResult
from tunelab.train.setfit import embed_texts, fit_logistic_head, make_pairs, train_contrastive


def load_encoder(cfg: RunConfig):
    """(encoder, tokenizer) of model.name: transformers' `AutoModel` (no head), pad token ensured."""
    from transformers import AutoModel

    from tunelab.models.load import load_with_tokenizer, pick_device, pick_dtype

    dev = pick_device(cfg.model.device)
    tok, encoder = load_with_tokenizer(AutoModel, cfg.model.name, where="model.name", what="a sentence encoder",
                                       hint="give an encoder or decoder model that transformers can load",
                                       dtype=pick_dtype(cfg.model.dtype, dev))
    ensure_pad(encoder, tok)
    return encoder.to(dev), tok


def fitted_classifier(encoder, ids, y, n_classes, weights, c, pad_id, amp) -> PooledHeadClassifier:
    """The encoder (as it is now) + a logistic head fitted on its vectors of the training texts."""
    x = embed_texts(encoder, ids, pad_id, amp=amp)
    return PooledHeadClassifier(encoder, fit_logistic_head(x, y, n_classes, weights, c))


def run_setfit(cfg: RunConfig, quiet: bool = False, console: Console | None = None) -> ClassifyOutcome:
    # ---- setup: data first, so bad input fails before any model loads or anything is written -------------
    console, run = setup_run(cfg, quiet, console)
    cfg = resolve(cfg)
    train_ex, val_ex = load_classify_splits(cfg)
    labels = label_set(cfg, train_ex, val_ex)
    encoder, tok = load_encoder(cfg)
    d, c = cfg.data, cfg.classify
    train_tok = tokenize_examples(tok, train_ex, labels, d.max_length, d.truncation_side)
    val_tok = tokenize_examples(tok, val_ex, labels, d.max_length, d.truncation_side)
    ids, y = [e.input_ids for e in train_tok], [e.label for e in train_tok]
    weights = class_weights(c.class_weights, labels, y)
    anchors = oversample(list(range(len(y))), y, cfg.train.seed) if c.sampler == "balanced" else None
    pairs = make_pairs(y, c.setfit.pairs_per_example, cfg.train.seed, anchors)
    console.print(f"data: {len(train_tok)} train / {len(val_tok)} validation examples, {len(labels)} labels; "
                  f"{len(pairs)} pairs ({sum(p[2] == 1.0 for p in pairs)} same-label)")
    begin_classify_run(run, cfg, tok, labels, [EMBEDDER_DIR, HEAD_FILE], console)
    amp = autocast_dtype(cfg.train.precision, next(encoder.parameters()).device)
    objective = ClassifyObjective(tok.pad_token_id, labels, cfg.train.batch_size)
    logger = MetricsLogger(run, cfg.train.report_to)
    fit = (lambda: fitted_classifier(encoder, ids, y, len(labels), weights, c.setfit.head_c, tok.pad_token_id, amp))

    # ---- before: a head on the untuned encoder -------------------------------------------------------------
    before = objective.measure(fit(), val_tok, amp) if val_tok else {}
    if before:
        console.print(f"head on the untuned encoder: val accuracy {before['accuracy']:.3f}, "
                      f"macro-F1 {before['macro_f1']:.3f}")
        logger({"step": 0, "epoch": 0, "event": "before", "val_loss": round(before["val_loss"], 5),
                **{k: round(v, 5) for k, v in flat_metrics(before).items()}})

    # ---- train: the encoder on the pairs, then the head on its frozen vectors ------------------------------
    n_encoder = sum(p.numel() for p in encoder.parameters())
    stats = train_contrastive(encoder, ids, pairs, cfg.train, pad_id=tok.pad_token_id, amp=amp,
                              log=logger if is_main() else None)
    model = fit()
    trainable = (f"contrastive stage: every encoder weight ({n_encoder:,}); head: logistic regression "
                 f"({len(labels)} x {model.head.in_features} + {len(labels)}) on the frozen mean-pooled vectors")

    # ---- after + save --------------------------------------------------------------------------------------
    val_logits = objective.logits(model, val_tok, amp) if val_tok else None
    after = objective.measure(model, val_tok, amp, val_logits) if val_tok else {}
    if after:
        logger({"step": stats.steps, "epoch": cfg.train.epochs, "val_loss": round(after["val_loss"], 5),
                **{k: round(v, 5) for k, v in flat_metrics(after).items()}})
    offsets = tune_offsets(val_logits, [e.label for e in val_tok], labels) if val_tok and c.offsets else {}
    if is_main():
        model.save(run.path)
        if offsets:
            run.write_text(OFFSETS_FILE, json.dumps({"labels": labels, **offsets}, indent=2) + "\n")
    result = TrainResult(steps=stats.steps, train_seconds=stats.seconds, trained_tokens=stats.tokens,
                         steps_run=stats.steps, tokens_run=stats.tokens, best_epoch=-1,
                         best_val=after.get("val_loss", float("nan")))
    outcome = ClassifyOutcome(run.path, result, labels, trainable, before, after, offsets, len(train_tok),
                              len(val_tok), n_encoder + sum(p.numel() for p in model.head.parameters()))
    if is_main():
        write_classify_report(run, cfg, outcome)
    finish_run(run, result, cfg.train.keep_checkpoints)
    return outcome
