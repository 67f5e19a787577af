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

Loss = sum_i w_{y_i} CE(logits_i, y_i) over a micro-batch / its size (w = 1 with class_weights none:
mean CE per example); e.g. batch 32, 8,484 examples -> ceil(8484 / 32) = 266 optimizer steps per epoch.
The validation loss is unweighted mean CE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console

from tunelab.config import RunConfig
from tunelab.data.formats import ClassifyExample
from tunelab.errors import TunelabError
from tunelab.eval.classification import classification_metrics, flat_metrics
from tunelab.eval.logit_offsets import FILE as OFFSETS_FILE, tune_offsets
from tunelab.infer.classify import batched_logits, encode_texts, load_sequence_classifier, pad_batch
from tunelab.methods import method_of
from tunelab.runs.rundir import RunDir
from tunelab.runtime.precision import autocast_dtype
from tunelab.train.class_balance import class_weights, oversample
from tunelab.train.distributed import is_main
from tunelab.train.engine import TrainResult
from tunelab.train.loggers import MetricsLogger
from tunelab.train.recipes._common import Outcome, begin_run, finish_run, setup_run, train_engine
from tunelab.train.reports import write_classify_report
from tunelab.train.resolve import resolve

METHODS = ("lora", "full", "freeze")


@dataclass
class LabeledIds:
    """A tokenized classification example: token ids (special tokens included) and the label id."""

    input_ids: list[int]
    label: int


class ClassifyObjective:
    """Cross-entropy of the head's logits against the label id, weighted per class.

    loss_sum = sum_i w_{y_i} CE(logits_i, y_i) over the micro-batch (w: `weights`, None = all 1),
    count = examples in it; evaluate -> val_loss (unweighted mean CE per example), accuracy, macro_f1,
    precision/<label>, recall/<label>.
    """

    def __init__(self, pad_id: int, labels: list[str], eval_batch_size: int = 32,
                 weights: torch.Tensor | None = None):
        self.pad_id = pad_id
        self.labels = labels
        self.eval_batch_size = eval_batch_size
        self.weights = weights

    def collate(self, examples: list[LabeledIds]) -> dict[str, torch.Tensor]:
        batch = pad_batch([e.input_ids for e in examples], self.pad_id)
        batch["labels"] = torch.tensor([e.label for e in examples], dtype=torch.long)
        return batch

    def loss_sum(self, model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        w = None if self.weights is None else self.weights.to(logits.device)
        return (F.cross_entropy(logits.float(), batch["labels"], weight=w, reduction="sum"),
                int(batch["labels"].numel()))

    def logits(self, model, examples: list[LabeledIds], amp=None) -> torch.Tensor:
        return batched_logits(model, [e.input_ids for e in examples], self.pad_id, self.eval_batch_size, amp)

    def measure(self, model, examples: list[LabeledIds], amp=None, logits: torch.Tensor | None = None) -> dict:
        """val_loss plus `classification_metrics` (per-class figures and the confusion matrix)."""
        logits = self.logits(model, examples, amp) if logits is None else logits
        y = torch.tensor([e.label for e in examples], dtype=torch.long)
        m = classification_metrics(y.tolist(), logits.argmax(-1).tolist(), self.labels)
        m["val_loss"] = float(F.cross_entropy(logits, y)) if len(examples) else float("nan")
        return m

    def evaluate(self, model, examples, amp):
        m = self.measure(model, examples, amp)
        return {"val_loss": m["val_loss"], **flat_metrics(m)}

    def length(self, example: LabeledIds) -> int:
        return len(example.input_ids)

    def trained_tokens(self, batch, count: int) -> int:
        return int(batch["attention_mask"].sum())  # non-pad tokens


@dataclass
class ClassifyOutcome(Outcome):
    run_dir: Path
    result: TrainResult
    labels: list[str]
    trainable: str
    before: dict = field(default_factory=dict)  # `ClassifyObjective.measure` of the untrained head
    after: dict = field(default_factory=dict)  # ... of the trained model (best evaluation kept)
    offsets: dict = field(default_factory=dict)  # `tune_offsets` on validation ({} when classify.offsets is off)
    n_train: int = 0
    n_val: int = 0
    n_trainable: int = 0  # trainable parameters (LoRA + head, or the unfrozen weights)

    def summary_lines(self) -> list[str]:
        r = self.result
        lines = []
        if self.before and self.after:
            b, a = self.before, self.after
            lines.append(f"validation accuracy: untrained head {b['accuracy']:.3f} -> tuned {a['accuracy']:.3f}; "
                         f"macro-F1 {b['macro_f1']:.3f} -> {a['macro_f1']:.3f} ({self.n_val} examples)")
        if self.offsets:
            o = self.offsets
            lines.append(f"logit offsets {', '.join(f'{x}={b:+.1f}' for x, b in zip(self.labels, o['offsets']))}: "
                         f"validation macro-F1 {o['macro_f1_before']:.3f} -> {o['macro_f1_after']:.3f} "
                         f"(predict applies them; --no-offsets to leave them out)")
        lines.append(f"{r.speed_line()}; {self.trainable}")
        weights = "model/" if RunDir(self.run_dir).model_dir.exists() else "adapter/"
        lines.append(f"run saved to {self.run_dir} (report.md, confusion.png, {weights}); "
                     f"predict with: tunelab predict {self.run_dir} --text \"...\"")
        return lines


# ---- data ----------------------------------------------------------------------------------------------------
def load_classify_splits(cfg: RunConfig) -> tuple[list[ClassifyExample], list[ClassifyExample]]:
    """Train / validation ClassifyExamples (`text` + `label` records) through the task-aware `load_splits`."""
    from tunelab.data.dataset import load_splits

    return load_splits(cfg)


def label_set(cfg: RunConfig, train: list[ClassifyExample], val: list[ClassifyExample]) -> list[str]:
    """`classify.labels` (its order) or the training labels sorted; every example's label must be in it."""
    given = cfg.classify.labels
    if given is not None and len(set(given)) != len(given):
        raise TunelabError("classify.labels lists a label twice", where="classify.labels", hint="list each label once")
    labels = list(given) if given is not None else sorted({ex.label for ex in train})
    known = set(labels)
    for ex in [*train, *val]:
        if ex.label not in known:
            if given is not None:
                raise TunelabError(f"field 'label': '{ex.label}' is not in classify.labels", where=ex.where,
                                   hint=f"one of: {', '.join(labels)}")
            raise TunelabError(f"field 'label': '{ex.label}' never occurs in the training data", where=ex.where,
                               hint="add training examples of it, or list every label in classify.labels")
    if len(labels) < 2:
        raise TunelabError(f"a classifier needs at least 2 labels, the data has {len(labels)}", where="data.train",
                           hint="add examples of another label")
    return labels


def tokenize_examples(tok, examples: list[ClassifyExample], labels: list[str], max_length: int,
                      truncation_side: str = "right") -> list[LabeledIds]:
    ids = encode_texts(tok, [ex.text for ex in examples], max_length, truncation_side)
    index = {x: i for i, x in enumerate(labels)}
    return [LabeledIds(x, index[ex.label]) for x, ex in zip(ids, examples)]


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


def begin_classify_run(run: RunDir, cfg: RunConfig, tok, labels: list[str], head: list[str], console) -> int | None:
    """`begin_run` (no chat template), then labels.json and tokenizer/: what `Classifier.from_run` reads."""
    from tunelab.models.registry import resolve

    resume_step = begin_run(run, cfg, resolve(cfg.model.name).path, console=console)
    if not is_main():  # rank 0 writes the run folder (train/distributed.py)
        return resume_step
    run.write_text("labels.json", json.dumps({"labels": labels, "head": head}, indent=2) + "\n")
    tok.save_pretrained(str(run.path / "tokenizer"))
    return resume_step
