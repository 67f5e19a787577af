"""Sequence classifiers: build one on any base, and predict with a finished classify run.

    model, tok, head = load_sequence_classifier("minilm-l6", ["neg", "pos"])   # a new, untrained head
    clf = Classifier.from_run("runs/sentiment")                               # base + adapter (or model/)
    clf.predict(["what a film"])   # -> [{"label": "pos", "probs": {"neg": 0.08, "pos": 0.92}}]

Logit offsets: a run trained with `classify.offsets: true` holds offsets.json, per-class offsets b
tuned on its validation split for macro-F1 (eval/logit_offsets.py). `from_run` loads them and `predict`
returns argmax_k (z_k + b_k) with probabilities softmax(z + b); `from_run(..., offsets=False)` (or
`tunelab predict --no-offsets`) uses the raw logits z. `logits()` always returns the raw z.

A `classify.setfit` run is an encoder with a linear head on its mean-pooled vectors instead
(infer/pooled_classifier.py); `from_run` loads it when the run holds `embedder/`.

Otherwise the head is `AutoModelForSequenceClassification`'s: an encoder classifies its pooled [CLS]
vector (`classifier`), a decoder its last non-pad token (`score`). A decoder needs a pad token to
find that position: pad = eos when the tokenizer has one, else a new `<|pad|>` token whose
embedding row is set to the mean of the existing rows (deterministic, so a saved adapter reloads
onto an identical base). Batches are right-padded with the pad id; attention_mask marks real tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tunelab.errors import TunelabError
from tunelab.infer.pooled_classifier import PooledHeadClassifier, has_pooled_head

PAD_TOKEN = "<|pad|>"
OFFSETS_FILE = "offsets.json"  # written by the classify recipe (eval/logit_offsets.py: FILE)


def pad_batch(ids: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token id lists into input_ids + attention_mask (1 = real token)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def ensure_pad(model, tok) -> None:
    """Give the tokenizer a pad token (eos, else a new one) and make the model agree on its id."""
    if tok.pad_token is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        else:
            tok.add_special_tokens({"pad_token": PAD_TOKEN})
    emb = model.get_input_embeddings()
    rows = emb.weight.shape[0]
    if len(tok) > rows:  # new token(s): grow the embeddings, new rows = mean of the old ones
        model.resize_token_embeddings(len(tok), mean_resizing=False)
        with torch.no_grad():
            w = model.get_input_embeddings().weight
            w[rows:] = w[:rows].mean(0, keepdim=True)
    model.config.pad_token_id = tok.pad_token_id


def head_modules(model, missing_keys) -> list[str]:
    """Names of the newly initialised modules (the head): the ones whose weights the checkpoint lacked.

    A missing key outside the base model (e.g. `classifier.weight`, `score.weight`) names its top
    module (`classifier`, `score`); one inside it (e.g. `bert.pooler.dense.weight`) its own module.
    """
    prefix = getattr(model, "base_model_prefix", "")
    names = []
    for key in sorted(missing_keys):
        parts = key.split(".")
        name = ".".join(parts[:-1]) if parts[0] == prefix else parts[0]
        if name and name not in names:
            names.append(name)
    return names


def load_sequence_classifier(name: str, labels: list[str], *, dtype: str = "auto", device: str = "auto",
                             tokenizer_dir: str | Path | None = None, where: str = "model.name"):
    """(model, tokenizer, head module names): `name`'s base with a fresh head for `labels` (in this order).

    The head's initial weights come from torch's RNG: seed it first for a reproducible start.
    `tokenizer_dir` loads a saved tokenizer (a run's) instead of the base's.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunelab.models.load import _hub_error, pick_device, pick_dtype
    from tunelab.models.registry import resolve

    rm = resolve(name, where=where)
    dev = pick_device(device)
    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir or rm.path))
        model, info = AutoModelForSequenceClassification.from_pretrained(
            rm.path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={x: i for i, x in enumerate(labels)}, dtype=pick_dtype(dtype, dev), output_loading_info=True)
    except (OSError, ValueError) as e:
        if rm.source == "hub":
            raise _hub_error(rm, e) from e
        raise TunelabError(f"cannot load {name} as a sequence classifier: {e}", where=where,
                           hint="give an encoder or decoder model that transformers can classify with") from e
    ensure_pad(model, tok)
    return model.to(dev), tok, head_modules(model, info.get("missing_keys", ()))


def encode_texts(tok, texts: list[str], max_length: int, truncation_side: str = "right") -> list[list[int]]:
    """Token ids of each text with the model's special tokens, cut to `max_length`."""
    tok.truncation_side = truncation_side
    return tok(list(texts), truncation=True, max_length=max_length)["input_ids"]


@torch.no_grad()
def length_batched(module, ids: list[list[int]], pad_id: int, batch_size: int, amp: torch.dtype | None,
                   forward) -> list[torch.Tensor]:
    """`forward(module, padded batch)` -> [b, d] over `ids`, batches formed by length (little padding), in
    eval mode (the module's mode restored after); one float32 CPU row per input, in input order."""
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[torch.Tensor | None] = [None] * len(ids)
    for s in range(0, len(order), batch_size):
        part = order[s:s + batch_size]
        batch = {k: v.to(device) for k, v in pad_batch([ids[i] for i in part], pad_id).items()}
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            rows = forward(module, batch).float().cpu()
        for j, i in enumerate(part):
            out[i] = rows[j]
    module.train(was_training)
    return out


def batched_logits(model, ids: list[list[int]], pad_id: int, batch_size: int = 32,
                   amp: torch.dtype | None = None) -> torch.Tensor:
    """Logits [n, classes] in the input order; batches are formed by length (little padding)."""
    out = length_batched(model, ids, pad_id, batch_size, amp, lambda m, batch: m(**batch).logits)
    return torch.stack(out) if out else torch.zeros((0, model.config.num_labels))


def read_offsets(run_dir: Path, labels: list[str]) -> list[float] | None:
    """The run's offsets.json offsets (in `labels` order), or None when it has none."""
    path = Path(run_dir) / OFFSETS_FILE
    if not path.exists():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("labels") != labels or len(saved.get("offsets", ())) != len(labels):
        raise TunelabError(f"{path} does not match the run's labels", where=str(path),
                           hint="delete it, or predict with --no-offsets")
    return [float(b) for b in saved["offsets"]]


class Classifier:
    """A trained classifier: texts -> label + probabilities (softmax of the logits)."""

    def __init__(self, model, tokenizer, labels: list[str], max_length: int = 512, truncation_side: str = "right",
                 amp: torch.dtype | None = None, offsets: list[float] | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.labels = labels
        self.max_length = max_length
        self.truncation_side = truncation_side
        self.amp = amp
        self.offsets = None if offsets is None else torch.tensor(offsets, dtype=torch.float32)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "auto", offsets: bool = True) -> "Classifier":
        """Rebuild the trained model of a finished `task: classify` run (with its logit offsets, if it
        saved any, unless `offsets` is False)."""
        from tunelab.models.load import pick_device
        from tunelab.runtime.precision import autocast_dtype
        from tunelab.runs.load import load_run

        rd, _ = load_run(run_dir)
        if rd.task != "classify" or not rd.labels_path.exists():
            raise TunelabError(f"{rd.path} is not a classification run (task: {rd.task})", where="RUN",
                               hint="give a run trained with task: classify")
        cfg = rd.config
        labels = rd.labels
        if has_pooled_head(rd.path):  # classify.setfit: the tuned encoder + a linear head on its pooled vectors
            from transformers import AutoTokenizer

            model = PooledHeadClassifier.load(rd.path, device)
            tok = AutoTokenizer.from_pretrained(str(rd.tokenizer_dir))
        elif rd.model_dir.exists():  # full / freeze: the whole model was saved
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            model = AutoModelForSequenceClassification.from_pretrained(str(rd.model_dir))
            tok = AutoTokenizer.from_pretrained(str(rd.tokenizer_dir))
            model.to(pick_device(device))
        else:  # lora: the base with a fresh head, then the adapter (LoRA weights + the trained head)
            from peft import PeftModel

            model, tok, _ = load_sequence_classifier(cfg.model.name, labels, dtype=cfg.model.dtype,
                                                     device=device, tokenizer_dir=rd.tokenizer_dir)
            model = PeftModel.from_pretrained(model, str(rd.adapter_dir))
        dev = next(model.parameters()).device
        amp = autocast_dtype(cfg.train.precision, dev)
        return cls(model, tok, labels, cfg.data.max_length, cfg.data.truncation_side, amp,
                   read_offsets(rd.path, labels) if offsets else None)

    def logits(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        ids = encode_texts(self.tokenizer, texts, self.max_length, self.truncation_side)
        return batched_logits(self.model, ids, self.tokenizer.pad_token_id, batch_size, self.amp)

    def predict(self, texts: list[str], batch_size: int = 32) -> list[dict]:
        """[{"label": best label, "probs": {label: probability}}] for each text, in order."""
        if not texts:
            return []
        z = self.logits(texts, batch_size)
        probs = torch.softmax(z if self.offsets is None else z + self.offsets, dim=-1)
        return [{"label": self.labels[int(p.argmax())], "probs": {x: float(v) for x, v in zip(self.labels, p)}}
                for p in probs]
