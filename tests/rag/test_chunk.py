"""Token chunking: size, overlap, paragraph and section boundaries."""

from __future__ import annotations

import re

import pytest

from tunelab.errors import TunelabError
from tunelab.rag.chunk import chunk_document
from tunelab.rag.ingest import Block, Document


def words_tokenizer(texts, **kw):
    """One token per whitespace-separated word, with character offsets (like a fast tokenizer)."""
    return {"offset_mapping": [[m.span() for m in re.finditer(r"\S+", t)] for t in texts]}


def make_doc(paragraphs: list[tuple[tuple[str, ...], int]]) -> Document:
    """Paragraphs of n numbered words (w0 w1 ...) under the given section paths."""
    doc, pos, w = Document(path=None), 0, 0  # type: ignore[arg-type]
    for path, n in paragraphs:
        text = " ".join(f"w{w + i}" for i in range(n))
        w += n
        doc.blocks.append(Block(text, path, pos, pos + len(text)))
        pos += len(text) + 2
    return doc


def test_long_paragraph_is_windowed_with_overlap():
    doc = make_doc([(("A",), 600)])
    chunks = chunk_document(doc, words_tokenizer, size=256, overlap=25)
    # [0, 256), [231, 487), [462, 600) as the module docstring says
    assert [(c.text.split()[0], c.text.split()[-1], c.n_tokens) for c in chunks] == [
        ("w0", "w255", 256), ("w231", "w486", 256), ("w462", "w599", 138)]


def test_chunks_end_on_paragraph_boundaries():
    doc = make_doc([(("A",), 100)] * 4)
    chunks = chunk_document(doc, words_tokenizer, size=256, overlap=25)
    # 100 + 100 fit, the third would not: cut after paragraph 2; next starts 25 tokens earlier
    assert [c.n_tokens for c in chunks] == [200, 225]  # w0-w199, then w175-w399
    assert chunks[0].text.endswith("w199") and chunks[1].text.startswith("w175")
    for c in chunks:
        assert doc.text[c.start:c.end] == c.text


def test_a_chunk_never_spans_two_sections():
    doc = make_doc([(("Page", "One"), 30), (("Page", "Two"), 30), (("Page", "Two"), 10)])
    chunks = chunk_document(doc, words_tokenizer, size=256, overlap=25)
    assert [(c.section, c.section_path, c.n_tokens) for c in chunks] == [
        ("One", "Page > One", 30), ("Two", "Page > Two", 40)]
    assert chunks[1].embed_text() == "Page > Two\n" + chunks[1].text
    assert chunks[1].embed_text(headings=False) == chunks[1].text


def test_bad_settings():
    doc = make_doc([(("A",), 10)])
    with pytest.raises(TunelabError, match="overlap"):
        chunk_document(doc, words_tokenizer, size=40, overlap=30)
    with pytest.raises(TunelabError, match="at least 8"):
        chunk_document(doc, words_tokenizer, size=4, overlap=0)
