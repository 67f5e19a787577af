"""From the `data:` config to train/validation Example lists of the task (deterministic in `data.seed`).

    sources -> records -> columns renamed -> Examples of cfg.task (sft: ChatExample, pretrain: TextExample,
    classify: ClassifyExample, reward/dpo: PreferenceExample)
    -> dedupe (data.dedupe: exact duplicates, and train examples equal to a validation one)
    -> validation: the data.validation source, else a seeded val_split of the (unweighted) train examples
    -> weights per dataset: round(w * n) examples (w < 1 subsamples, w > 1 repeats), then one seeded
       shuffle of the mixture (a single dataset with weight 1 keeps its file order)

Validation is split off before weights repeat anything, so a repeated example never lands in both.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field

from tunelab.config import DataSpec, RunConfig
from tunelab.data.formats import to_examples
from tunelab.data.sources import read_source
from tunelab.errors import TunelabError


@dataclass
class SourceStats:
    """One dataset of the mixture: examples read, and examples it contributes to train after its weight."""

    path: str
    weight: float
    read: int
    taken: int = 0


@dataclass
class DataSplits:
    train: list
    validation: list
    sources: list[SourceStats] = field(default_factory=list)
    duplicates_dropped: int = 0  # exact duplicates within the data (data.dedupe)
    overlap_dropped: int = 0  # train examples identical to a validation example (data.dedupe)


def _named(e: TunelabError, field_name: str) -> TunelabError:
    """Prefix the config field: "data.train: d.jsonl:3: field 'label' ..." (unless it is there already)."""
    if e.where and not e.where.startswith("data."):
        return TunelabError(e.message, where=f"{field_name}: {e.where}", hint=e.hint)
    return e


def _load_spec(cfg: RunConfig, spec: DataSpec, field_name: str) -> list:
    d = cfg.data
    records = _read(cfg, spec, field_name)
    columns = spec.columns if spec.columns is not None else d.columns
    try:
        return to_examples(records, spec.format or d.format, cfg.task, cfg.classify.labels, columns)
    except TunelabError as e:
        raise _named(e, field_name) from None


def _read(cfg: RunConfig, spec: DataSpec, field_name: str):
    split = spec.split or ("validation" if field_name.startswith("data.validation") else "train")
    try:
        return read_source(spec.path, cfg.input_base(spec.path, field_name), field_name, text_files=cfg.task == "pretrain",
                           split=split)
    except TunelabError as e:
        raise _named(e, field_name) from None


def _specs(value) -> list[DataSpec]:
    return [DataSpec(path=value)] if isinstance(value, str) else list(value)


def example_key(ex) -> str:
    """What makes two examples 'the same' for dedupe: every field but where/meta."""
    d = {k: v for k, v in asdict(ex).items() if k not in ("where", "meta")}
    return json.dumps(d, sort_keys=True, ensure_ascii=False)


def _dedupe(groups: list[list], seen: set[str]) -> int:
    """Drop examples whose key is already in `seen` (in place, first one kept); returns how many."""
    dropped = 0
    for g in groups:
        kept = []
        for ex in g:
            k = example_key(ex)
            if k in seen:
                dropped += 1
            else:
                seen.add(k)
                kept.append(ex)
        g[:] = kept
    return dropped


def weighted(examples: list, weight: float, rng: random.Random) -> list:
    """round(w * n) examples: floor(k / n) full copies + a seeded sample of the rest (file order kept).

    e.g. n = 120, w = 2.5 -> k = 300 = 2 x 120 + 60 sampled; w = 0.25 -> 30 sampled.
    """
    n = len(examples)
    k = round(weight * n)
    if n == 0:
        return []
    copies, rest = divmod(k, n)
    picked = sorted(rng.sample(range(n), rest))
    return examples * copies + [examples[i] for i in picked]


def load_data(cfg: RunConfig) -> DataSplits:
    d = cfg.data
    specs = _specs(d.train)
    groups = [_load_spec(cfg, s, f"data.train[{i}]" if len(specs) > 1 else "data.train") for i, s in enumerate(specs)]
    stats = [SourceStats(s.path, s.weight, len(g)) for s, g in zip(specs, groups)]
    val: list = []
    if d.validation:
        vspecs = _specs(d.validation)
        val = [ex for i, s in enumerate(vspecs)
               for ex in _load_spec(cfg, s, f"data.validation[{i}]" if len(vspecs) > 1 else "data.validation")]
    dups = overlap = 0
    if d.dedupe:
        seen: set[str] = set()
        vgroup = [val]
        dups = _dedupe(vgroup, seen)  # duplicates within validation
        val = vgroup[0]
        dups += _dedupe(groups, set())  # duplicates within train (across its datasets too)
        overlap = _dedupe(groups, seen) if val else 0  # train examples equal to a validation example
    if not d.validation and d.val_split > 0:
        # the split is over the concatenated (unweighted) train examples, as for a single file
        tagged = [(gi, ex) for gi, g in enumerate(groups) for ex in g]
        idx = list(range(len(tagged)))
        random.Random(d.seed).shuffle(idx)
        n_val = max(1, round(len(tagged) * d.val_split))
        if n_val >= len(tagged):
            raise TunelabError(f"val_split {d.val_split} leaves no training examples ({len(tagged)} in all)",
                               where="data.val_split", hint="lower it or add data")
        val_idx = set(idx[:n_val])
        val = [tagged[i][1] for i in sorted(val_idx)]
        groups = [[ex for i, (gi, ex) in enumerate(tagged) if gi == g and i not in val_idx] for g in range(len(groups))]
    train: list = []
    for i, (spec, g, st) in enumerate(zip(specs, groups, stats)):
        part = g if spec.weight == 1 else weighted(g, spec.weight, random.Random(d.seed * 1000 + i))
        if g and not part:  # emptied by its weight; a dataset emptied by dedupe/val_split shows as taken = 0
            where = f"data.train[{i}].weight" if len(specs) > 1 else "data.train"
            raise TunelabError(f"weight {spec.weight} takes no example of the {len(g)} in {spec.path}", where=where,
                               hint=f"use a weight of at least {0.5 / len(g):.3g}, or drop it")
        st.taken = len(part)
        train += part
    if not train:
        raise TunelabError("no training examples left", where="data.train",
                           hint="dedupe and val_split took them all; add data or lower val_split")
    if len(specs) > 1:
        random.Random(d.seed).shuffle(train)
    return DataSplits(train, val, stats, dups, overlap)


def load_splits(cfg: RunConfig) -> tuple[list, list]:
    """(train, validation) Examples of `cfg.task`; see load_data for the steps."""
    s = load_data(cfg)
    return s.train, s.validation
