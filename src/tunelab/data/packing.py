"""Continued-pretraining data: raw text -> one token stream -> fixed blocks (packing).

    stream  = tok(doc_1) + [EOS] + tok(doc_2) + [EOS] + ... + tok(doc_n) + [EOS]
    block_i = stream[i*L : (i+1)*L]          L = data.max_length
    labels  = input_ids                      (every token is learned; the loss shift predicts token t+1 from <= t)

e.g. 3 documents of 700, 300 and 1,100 tokens + 3 EOS = 2,103 tokens; L = 512 -> 4 full blocks
(2,048 tokens) + one last block of the 55 remaining tokens (kept when it has >= 2 tokens, since a
1-token block has nothing to predict; the collator pads it).

Document boundaries: a block may hold the end of one document and the start of the next, and
attention runs across that boundary (no per-document mask or position reset). The EOS between
them tells the model a new document starts; this is what GPT-2 and transformers' `run_clm`
example do. It spends no padding and works with every attention implementation.

Sources (`read_texts`): a directory (every .txt/.md file below it, sorted by path, one document
each), a single .txt/.md file (one document), or a .jsonl/.json/.csv/.tsv file whose records have
a `text` field (one document each).
"""

from __future__ import annotations

import random
from pathlib import Path

from tunelab.data.formats import TextExample
from tunelab.data.sources import _read_text, read_records
from tunelab.data.tokenize import TokenizedExample
from tunelab.errors import TunelabError

TEXT_SUFFIXES = (".txt", ".md")


def read_texts(path: str | Path, field: str = "data.train") -> list[TextExample]:
    """Documents from a folder of .txt/.md files, one .txt/.md file, or records with a `text` field."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise TunelabError(f"no .txt or .md file in {p}", where=field, hint="put the corpus in .txt/.md files")
        docs = [TextExample(_read_text(f, field), f"{f}:1") for f in files]
    elif p.suffix.lower() in TEXT_SUFFIXES:
        docs = [TextExample(_read_text(p, field), f"{p}:1")]
    else:
        docs = []
        for rec in read_records(p, field):
            if "text" not in rec.data:
                raise TunelabError("missing field 'text'", where=rec.where,
                                   hint="task pretrain reads records like {\"text\": \"...\"}")
            if not isinstance(rec.data["text"], str):
                raise TunelabError(f"field 'text' must be a string, got {type(rec.data['text']).__name__}",
                                   where=rec.where)
            docs.append(TextExample(rec.data["text"], rec.where))
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise TunelabError("every document is empty", where=f"{field}: {p}", hint="add some text")
    return docs


def token_stream(docs: list[TextExample], tokenizer) -> tuple[list[int], list[str]]:
    """(ids, where) for the whole corpus: each document's tokens followed by EOS; `where[i]` names
    the document token i came from."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise TunelabError("the tokenizer has no EOS token to separate documents", where="model.name",
                           hint="use a model whose tokenizer defines eos_token")
    ids: list[int] = []
    where: list[str] = []
    for d in docs:
        doc = tokenizer(d.text, add_special_tokens=False, verbose=False)["input_ids"] + [eos]
        ids += doc
        where += [d.where] * len(doc)
    return ids, where


def pack(docs: list[TextExample], tokenizer, block_size: int) -> list[TokenizedExample]:
    """Cut the EOS-joined token stream into blocks of `block_size` (the remainder, if >= 2 tokens, is a
    shorter last block). Each block's `where` names the document its first token came from."""
    ids, where = token_stream(docs, tokenizer)
    blocks = []
    for s in range(0, len(ids), block_size):
        chunk = ids[s:s + block_size]
        if len(chunk) < 2:
            break
        blocks.append(TokenizedExample(chunk, list(chunk), f"{where[s]} (block {len(blocks)})"))
    return blocks


def split_blocks(blocks: list[TokenizedExample], val_split: float, seed: int) -> tuple[list, list]:
    """A seeded share of the blocks held out for validation (blocks never overlap, so held-out
    text is never trained on). Returns (train, validation) in stream order."""
    if val_split <= 0:
        return blocks, []
    n_val = max(1, round(len(blocks) * val_split))
    if n_val >= len(blocks):
        raise TunelabError(f"val_split {val_split} leaves no training block ({len(blocks)} blocks in all)",
                           where="data.val_split", hint="lower it, lower data.max_length, or add text")
    idx = list(range(len(blocks)))
    random.Random(seed).shuffle(idx)
    held = set(idx[:n_val])
    return [b for i, b in enumerate(blocks) if i not in held], [b for i, b in enumerate(blocks) if i in held]
