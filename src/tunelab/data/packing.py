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

Documents (`TextExample`) come from `tunelab.data.dataset.load_splits` (task: pretrain).
"""

from __future__ import annotations

from tunelab.data.formats import TextExample
from tunelab.data.tokenize import TokenizedExample
from tunelab.errors import TunelabError


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
