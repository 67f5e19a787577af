"""Split a `Document` into token-sized chunks that respect sections and paragraphs.

`chunk_document(doc, tokenizer, size=256, overlap=25)`:

- a chunk never spans two sections (a new heading starts a new chunk), so every chunk has one
  `section` (innermost heading) and `section_path` ("Page > Part > Section");
- inside a section, paragraphs are packed greedily up to `size` tokens of `tokenizer` (the
  embedder's, without special tokens); a chunk ends at the last paragraph boundary that fits,
  and only a paragraph longer than the space left in a near-empty chunk is cut mid-paragraph;
- the next chunk starts `overlap` tokens before the previous one ended (so a cut never loses
  context), e.g. 600 tokens of one paragraph -> [0, 256), [231, 487), [462, 600).

`start`/`end` are character offsets in `doc.text`; `text == doc.text[start:end]`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.errors import TunelabError
from tunelab.rag.ingest import Document


@dataclass
class Chunk:
    text: str
    section: str
    section_path: str
    start: int
    end: int
    n_tokens: int

    def embed_text(self, headings: bool = True) -> str:
        """What the embedder sees: the heading path on its own line, then the text."""
        return f"{self.section_path}\n{self.text}" if headings and self.section_path else self.text


def chunk_document(doc: Document, tokenizer, size: int = 256, overlap: int = 25) -> list[Chunk]:
    """Chunks of at most `size` tokens (see the module docstring for the rules)."""
    if size < 8:
        raise TunelabError(f"chunk size must be at least 8 tokens, got {size}", where="chunk.size")
    if not 0 <= overlap < size // 2:
        raise TunelabError(f"overlap must be in [0, size/2), got {overlap} for size {size}",
                           where="chunk.overlap")
    if not doc.blocks:
        return []
    enc = tokenizer([b.text for b in doc.blocks], add_special_tokens=False,
                    return_offsets_mapping=True, verbose=False)["offset_mapping"]
    text = doc.text
    chunks: list[Chunk] = []
    i = 0
    while i < len(doc.blocks):
        j = i
        while j < len(doc.blocks) and doc.blocks[j].section_path == doc.blocks[i].section_path:
            j += 1
        # flat token spans of this section (doc-absolute char offsets) and paragraph starts
        spans: list[tuple[int, int]] = []
        bounds: set[int] = set()
        for k in range(i, j):
            bounds.add(len(spans))
            base = doc.blocks[k].start
            spans.extend((base + a, base + b) for a, b in enc[k] if b > a)
        bounds.add(len(spans))
        _pack(spans, bounds, size, overlap, doc.blocks[i].section_path, text, chunks)
        i = j
    return chunks


def _pack(spans, bounds, size, overlap, section_path, text, out: list[Chunk]) -> None:
    n, s = len(spans), 0
    path = " > ".join(section_path)
    section = section_path[-1] if section_path else ""
    while s < n:
        e = min(s + size, n)
        if e < n:
            # last paragraph boundary that fits, unless it leaves the chunk under half full
            best = max((b for b in bounds if s < b <= e), default=None)
            if best is not None and best - s >= size // 2:
                e = best
        start, end = spans[s][0], spans[e - 1][1]
        out.append(Chunk(text[start:end], section, path, start, end, e - s))
        if e >= n:
            break
        s = max(e - overlap, s + 1)
