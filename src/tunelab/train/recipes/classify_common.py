"""What task classify's two recipes share: the tokenized example, the cross-entropy objective (its
validation measure), the outcome, the data and label checks, and the run folder's start.

    classify.py           the head trained with the model (lora | full | freeze) by the engine
    classify_setfit.py    `classify.setfit`: the encoder tuned on pairs, then a logistic head (train/setfit.py)

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

from tunelab.config import RunConfig
from tunelab.data.formats import ClassifyExample
from tunelab.errors import TunelabError
from tunelab.eval.classification import classification_metrics, flat_metrics
from tunelab.infer.classify import batched_logits, encode_texts, pad_batch
from tunelab.infer.pooled_classifier import EMBEDDER_DIR, has_pooled_head
from tunelab.runs.rundir import RunDir
from tunelab.train.distributed import is_main
from tunelab.train.engine import TrainResult
from tunelab.train.recipes._common import Outcome, begin_run


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
        rd = RunDir(self.run_dir)
        weights = (f"{EMBEDDER_DIR}/" if has_pooled_head(rd.path) else "model/" if rd.model_dir.exists()
                   else "adapter/")
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


def begin_classify_run(run: RunDir, cfg: RunConfig, tok, labels: list[str], head: list[str], console) -> int | None:
    """`begin_run` (no chat template), then labels.json and tokenizer/: what `Classifier.from_run` reads."""
    from tunelab.models.registry import resolve

    resume_step = begin_run(run, cfg, resolve(cfg.model.name).path, console=console)
    if not is_main():  # rank 0 writes the run folder (train/distributed.py)
        return resume_step
    run.write_text("labels.json", json.dumps({"labels": labels, "head": head}, indent=2) + "\n")
    tok.save_pretrained(str(run.path / "tokenizer"))
    return resume_step
