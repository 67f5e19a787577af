"""A seed ensemble of classify runs, read back like one run: `load_classifier(run)`.

An ensemble folder (written by `tunelab ensemble`, eval/classify_ensemble.py) holds

    config.yaml     the first member's config (task: classify), so `require_run` reads it as a run
    ensemble.json   {"members": [absolute run folders], "labels": [...]}
    labels.json     the members' labels (every member has the same, in the same order)
    offsets.json    per-class logit offsets tuned on validation for the ensemble's logits (optional)
    report.md, DONE

and no weights of its own. Its logits are the log of the members' mean probability,

    z_ens(x)_k = log( (1/M) * sum_m softmax(z_m(x))_k )

with each member's raw logits z_m (the members' own offsets are not applied: the ensemble tunes its
own b, and predicts argmax_k (z_ens_k + b_k), probabilities softmax(z_ens + b), as infer/classify.py
does for one run). Averaging probabilities, not logits, keeps a member that is sure from outvoting
the others by the size of its logits alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tunelab.errors import TunelabError
from tunelab.infer.classify import Classifier, read_offsets

ENSEMBLE_FILE = "ensemble.json"


def is_ensemble(run_dir: str | Path) -> bool:
    return (Path(run_dir) / ENSEMBLE_FILE).is_file()


def mean_probability_logits(member_logits: list[torch.Tensor]) -> torch.Tensor:
    """log of the mean of softmax(z_m) over members: [n, K] from M tensors [n, K]."""
    probs = torch.stack([torch.softmax(z.float(), dim=-1) for z in member_logits])  # [M, n, K]
    return probs.mean(0).clamp_min(1e-12).log()


class EnsembleClassifier(Classifier):
    """Members' mean probability (module docstring); `predict` is Classifier's, on those logits."""

    def __init__(self, members: list[Classifier], labels: list[str], offsets: list[float] | None = None):
        self.members = members
        self.labels = labels
        self.offsets = None if offsets is None else torch.tensor(offsets, dtype=torch.float32)

    @classmethod
    def from_dir(cls, run_dir: str | Path, device: str = "auto", offsets: bool = True) -> "EnsembleClassifier":
        path = Path(run_dir) / ENSEMBLE_FILE
        spec = json.loads(path.read_text(encoding="utf-8"))
        labels = list(spec["labels"])
        members = []
        for i, member in enumerate(spec["members"]):
            if not Path(member).is_dir():
                raise TunelabError(f"ensemble member {member} not found", where=f"{path}:members[{i}]",
                                   hint="put the run back, or build the ensemble again with `tunelab ensemble`")
            clf = Classifier.from_run(member, device=device, offsets=False)
            if clf.labels != labels:
                raise TunelabError(f"ensemble member {member} has labels {clf.labels}, the ensemble {labels}",
                                   where=f"{path}:members[{i}]", hint="build the ensemble again")
            members.append(clf)
        return cls(members, labels, read_offsets(Path(run_dir), labels) if offsets else None)

    def member_logits(self, texts: list[str], batch_size: int = 32) -> list[torch.Tensor]:
        return [m.logits(texts, batch_size) for m in self.members]

    def logits(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        return mean_probability_logits(self.member_logits(texts, batch_size))


def load_classifier(run_dir: str | Path, device: str = "auto", offsets: bool = True) -> Classifier:
    """The classifier of a finished classify run or of an ensemble folder (with its offsets unless
    `offsets` is False)."""
    if is_ensemble(run_dir):
        return EnsembleClassifier.from_dir(run_dir, device=device, offsets=offsets)
    return Classifier.from_run(run_dir, device=device, offsets=offsets)
