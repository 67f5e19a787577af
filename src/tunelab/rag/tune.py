"""Fine-tune a knowledge base's embedder on its own documents: `tune(kb, teacher=...)` (`tunelab rag tune`).

    1. select chunks        all, or those whose source matches `sources` (globs), at most `max_chunks`
                            (spread over the KB: ordered by sha1 of the chunk id)
    2. questions            a teacher writes the questions each chunk answers (tune_questions.py:
                            the synth pipeline, cached and resumable)
    3. split by chunk       a chunk's questions all go to training or all to the held-out set
                            (held out when sha1(chunk id) mod 1000 < 1000 x `holdout`; at least one
                            chunk on each side), so held-out recall measures chunks never trained on;
                            written to <kb>/tune/heldout.jsonl as {"question", "chunk_id"} lines, which
                            `tunelab rag fusion KB --questions` reads to fit the hybrid weight
    4. before               held-out recall@1, recall@k and MRR (first gold within 10) of the KB as it
                            is: its stored vectors and its query embedder, over every chunk of the KB
                            (unknown, {}, after an interrupted install: then the new one is installed)
    5. train                from the KB's base embedder (never a previous tune), MultipleNegativesRanking
                            loss with in-batch negatives (contrastive.py)
    6. after                the same held-out questions against every chunk re-embedded by the tuned model
    7. install              only when the held-out (recall@k, MRR) is not worse than before (or with
                            `keep_if_worse`): see tune_install.py (temp folder + rename; the manifest
                            names the tuned folder; queries then use it automatically)

A KB that already has a tuned embedder is refused unless `overwrite`; the questions stay cached
either way. The KB's embedder must be a transformer encoder (a `-static` table cannot be trained).

Raises:
    TunelabError: unknown KB, static embedder, existing tuned embedder without `overwrite`, no chunk
        selected, or fewer than 2 chunks with questions on either side of the split.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tunelab.errors import TunelabError
from tunelab.rag.contrastive import MNRL_SCALE, train_pairs
from tunelab.rag.static_embed import SUFFIX
from tunelab.rag.store import KnowledgeBase
from tunelab.rag.tune_questions import generate_questions

MRR_DEPTH = 10  # as tunelab.rag.evaluate: the first gold chunk within the top 10


@dataclass
class TuneOptions:
    sources: list[str] | None = None  # globs on the chunk's source ("faq/*"); None = every chunk
    max_chunks: int = 0  # 0 = every selected chunk
    per_chunk: int = 1  # questions asked of the teacher per chunk
    holdout: float = 0.2  # fraction of the chunks whose questions are held out
    epochs: int = 1
    batch_size: int = 32
    lr: float = 2e-5
    scale: float = MNRL_SCALE
    k: int = 3
    seed: int = 0
    overwrite: bool = False
    keep_if_worse: bool = False


@dataclass
class TuneReport:
    kb: str
    teacher: str
    chunks_in_kb: int
    chunks_selected: int
    chunks_with_questions: int
    train_pairs: int
    heldout_questions: int
    heldout_chunks: int
    k: int
    before: dict
    after: dict
    epoch_loss: list[float]
    installed: bool
    embedder_dir: str | None
    questions_file: str
    heldout_file: str = ""  # the held-out questions, {"question", "chunk_id"} lines
    synth: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)  # seconds: questions, before, train, embed, install

    def to_dict(self) -> dict:
        return asdict(self)


def select_chunks(rows: list[dict], sources: list[str] | None, max_chunks: int) -> list[dict]:
    """Rows whose source matches one of `sources` (fnmatch globs; None = all), ordered by sha1(id),
    the first `max_chunks` of them (0 = all)."""
    picked = [r for r in rows if not sources or any(fnmatch.fnmatch(r["source"], g) for g in sources)]
    picked.sort(key=lambda r: hashlib.sha1(r["id"].encode()).hexdigest())
    return picked[:max_chunks] if max_chunks > 0 else picked


def split_chunks(ids: list[str], holdout: float) -> tuple[list[str], list[str]]:
    """(train ids, held-out ids): held out when int(sha1(id)[:8], 16) mod 1000 < 1000 x holdout; one each at least."""
    key = {i: int(hashlib.sha1(i.encode()).hexdigest()[:8], 16) % 1000 for i in ids}
    held = [i for i in ids if key[i] < 1000 * holdout]
    train = [i for i in ids if key[i] >= 1000 * holdout]
    if not held and len(train) > 1:
        held.append(train.pop(min(range(len(train)), key=lambda j: key[train[j]])))
    if not train and len(held) > 1:
        train.append(held.pop(max(range(len(held)), key=lambda j: key[held[j]])))
    return train, held


def retrieval_scores(questions: np.ndarray, chunks: np.ndarray, gold: list[int], k: int) -> dict:
    """recall@1, recall@k and MRR of unit question vectors (n, d) against unit chunk vectors (m, d); gold[i] =
    row of question i's chunk. rank = 1 + number of chunks scoring strictly higher than the gold chunk."""
    sims = questions @ chunks.T  # (n, m) cosine similarities
    gold_sim = sims[np.arange(len(gold)), gold]
    ranks = 1 + (sims > gold_sim[:, None]).sum(axis=1)
    n = max(1, len(gold))
    return {"recall@1": round(float((ranks == 1).sum()) / n, 4), f"recall@{k}": round(float((ranks <= k).sum()) / n, 4),
            "mrr": round(float(np.where(ranks <= MRR_DEPTH, 1.0 / ranks, 0.0).sum()) / n, 4)}


def _teacher(teacher):
    if isinstance(teacher, str):
        from tunelab.synth.teachers import LocalTeacher

        return LocalTeacher.load(teacher, max_tokens=64, batch_size=16)
    return teacher


def _embed_window(manifest: dict) -> int:
    """Token limit used when the KB was embedded: chunk size + [CLS]/[SEP] + the context lines."""
    extra = 32 if manifest.get("headings", True) else 0
    if "context" in manifest:
        try:
            from tunelab.rag.context import style

            extra = style(manifest["context"]).extra_tokens
        except (ImportError, TunelabError, AttributeError):
            extra = 64
    return int(manifest.get("chunk_size", 256)) + 2 + extra


def tune(kb: str | None = None, *, directory: str | Path | None = None, teacher="smollm2-135m-instruct",
         options: TuneOptions | None = None, log=None) -> TuneReport:
    """Generate questions, fine-tune, measure, install; see the module docstring."""
    from tunelab.rag.embed import Embedder
    from tunelab.rag.embedders import kb_embedder
    from tunelab.rag.tune_install import install_tuned, read_rows

    opts = options or TuneOptions()
    say = log or (lambda s: None)
    store = KnowledgeBase.open(kb, directory)
    m = store.manifest
    base = m.get("embedder", "minilm-l6")
    if base.endswith(SUFFIX):
        raise TunelabError(f"this knowledge base uses the static embedder {base!r}, which cannot be fine-tuned",
                           where="rag tune", hint="index it with a transformer embedder (--embedder minilm-l6)")
    if (m.get("tuned_embedder") or m.get("tune_pending")) and not opts.overwrite:
        name = (m.get("tuned_embedder") or m.get("tune_pending"))["dir"]
        raise TunelabError(f"the knowledge base already has a tuned embedder ({store.dir / name})", where="rag tune",
                           hint="pass --overwrite to replace it")
    if not 0 < opts.holdout < 1:
        raise TunelabError(f"holdout must be between 0 and 1, got {opts.holdout}", where="--holdout")
    t0 = time.perf_counter()
    rows, vectors = read_rows(store)
    chunks = select_chunks(rows, opts.sources, opts.max_chunks)
    if not chunks:
        raise TunelabError("no chunk selected", where="--sources" if opts.sources else "rag tune",
                           hint="check the globs against the sources `rag query` prints" if opts.sources else
                           "index documents first")
    t = _teacher(teacher)
    say(f"{len(chunks)} of {len(rows)} chunks selected; questions from {t.describe()}")
    found, qfile, synth = generate_questions(store.dir / "tune", chunks, t, opts.per_chunk, log=say)
    train_ids, held_ids = split_chunks(sorted(found), opts.holdout)
    if len(train_ids) < 2 or not held_ids:
        raise TunelabError(f"only {len(found)} chunk(s) got a usable question: too few to train and validate",
                           where="rag tune", hint="select more chunks (--max-chunks, --sources) or another teacher")
    text = {r["id"]: r["embed_text"] for r in rows}
    pairs = [(q, text[c], c) for c in train_ids for q in found[c]]
    row_of = {r["id"]: i for i, r in enumerate(rows)}
    held_q = [q for c in held_ids for q in found[c]]
    held_gold = [row_of[c] for c in held_ids for _ in found[c]]
    heldout_file = _write_heldout(store.dir / "tune" / "heldout.jsonl", held_ids, found)
    t1 = time.perf_counter()

    if m.get("tune_pending"):  # an install was cut short: the stored vectors may come from either model
        before = {}
        say("held-out before: unknown (an earlier install was interrupted)")
    else:
        before = retrieval_scores(kb_embedder(m, store.dir).encode(held_q), vectors, held_gold, opts.k)
        say(f"held-out ({len(held_q)} questions on {len(held_ids)} chunks) before: {before}")
    t2 = time.perf_counter()

    src = Embedder.load(base)
    model, tok = _fresh_copy(src)
    window = _embed_window(m)
    stats = train_pairs(model, tok, pairs, epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr,
                        scale=opts.scale, passage_tokens=min(window, src.max_tokens), seed=opts.seed, log=say)
    t3 = time.perf_counter()
    tuned = Embedder(model, tok, f"{base} (tuned)", src.max_tokens)
    new_vectors = tuned.encode([r["embed_text"] for r in rows], max_tokens=window)
    after = retrieval_scores(tuned.encode(held_q), new_vectors, held_gold, opts.k)
    say(f"held-out after: {after}")
    t4 = time.perf_counter()

    key = f"recall@{opts.k}"
    better = not before or (after[key], after["mrr"]) >= (before[key], before["mrr"])
    folder = None
    if better or opts.keep_if_worse:
        info = {"base": base, "teacher": t.describe(), "k": opts.k, "before": before, "after": after,
                "train_pairs": len(pairs), "heldout_questions": len(held_q), "epochs": opts.epochs, "lr": opts.lr}
        sentences = store.sentences.reembedded(tuned) if store.sentences is not None else None
        folder = install_tuned(store, model, tok, new_vectors, info, sentences)
        say(f"installed {store.dir / folder}; the knowledge base is re-embedded with it")
    else:
        say(f"not installed: held-out {key} / MRR {after[key]} / {after['mrr']} is below {before[key]} / "
            f"{before['mrr']} (--keep-if-worse installs it anyway)")
    return TuneReport(
        kb=str(kb or store.dir), teacher=t.describe(), chunks_in_kb=len(rows), chunks_selected=len(chunks),
        chunks_with_questions=len(found), train_pairs=len(pairs), heldout_questions=len(held_q),
        heldout_chunks=len(held_ids), k=opts.k, before=before, after=after, epoch_loss=stats.epoch_loss,
        installed=folder is not None, embedder_dir=str(store.dir / folder) if folder else None,
        questions_file=str(qfile), heldout_file=str(heldout_file), synth=synth,
        stages={"questions": round(t1 - t0, 1), "before": round(t2 - t1, 1), "train": round(t3 - t2, 1),
                "embed": round(t4 - t3, 1), "install": round(time.perf_counter() - t4, 1)})


def _write_heldout(path: Path, held_ids: list[str], found: dict[str, list[str]]) -> Path:
    """The held-out questions as {"question", "chunk_id"} lines (what `tunelab rag fusion --questions` reads)."""
    import json
    import os

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps({"question": q, "chunk_id": c}, ensure_ascii=False) + "\n"
                           for c in held_ids for q in found[c]), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _fresh_copy(src):
    """A trainable deep copy of a loaded (cached, shared) embedder's model, and its tokenizer."""
    import copy

    model = copy.deepcopy(src.model)
    for p in model.parameters():
        p.requires_grad_(True)
    return model, src.tokenizer
