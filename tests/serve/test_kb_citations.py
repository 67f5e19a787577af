"""Chat with a knowledge base checks citations as `tunelab rag ask` does (no model needed)."""

from __future__ import annotations

import asyncio

from tunelab.serve.chat import ServingChat
from tunelab.serve.protocol.chat import Citation

HEAD = {"id": "chatcmpl-1", "created": 1, "model": "m"}
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
CITES = [Citation(index=1, source="keys.md", section="Rotating", text="t", similarity=0.8, start=0, end=1),
         Citation(index=2, source="notes.txt", section=None, text="u", similarity=0.6, start=0, end=1)]


class FakeGen:
    finish = "stop"

    def __init__(self, pieces):
        self._pieces = pieces

    async def pieces(self):
        for p in self._pieces:
            yield p


def _stream(pieces, citations):
    async def collect():
        return [c async for c in ServingChat(None).chunks(HEAD, FakeGen(pieces), citations)]
    return asyncio.run(collect())


def test_reply_adds_sources_or_keeps_the_models_citations():
    chat = ServingChat(None)
    r = chat.reply(HEAD, "Monthly.", "stop", USAGE, CITES).model_dump()
    assert r["choices"][0]["message"]["content"] == "Monthly.\n\nSources: [1] keys.md § Rotating; [2] notes.txt"
    assert r["cited_by"] == "added"
    r = chat.reply(HEAD, "Monthly [2], yearly [9].", "stop", USAGE, CITES).model_dump()
    assert r["choices"][0]["message"]["content"] == "Monthly [2], yearly." and r["cited_by"] == "model"
    r = chat.reply(HEAD, "Monthly [2].", "stop", USAGE, None).model_dump()  # no knowledge base: untouched
    assert r["choices"][0]["message"]["content"] == "Monthly [2]." and "cited_by" not in r
    assert chat.reply(HEAD, "no idea", "stop", USAGE, []).model_dump()["cited_by"] == "none"


def test_stream_appends_the_sources_line_before_the_finish_chunk():
    chunks = [c.model_dump() for c in _stream(["Month", "ly."], CITES)]
    assert chunks[-2]["choices"][0]["delta"]["content"] == "\n\nSources: [1] keys.md § Rotating; [2] notes.txt"
    assert chunks[-1]["cited_by"] == "added" and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    chunks = [c.model_dump() for c in _stream(["Month", "ly [1]."], CITES)]
    assert chunks[-1]["cited_by"] == "model" and "Sources" not in str(chunks)
    chunks = [c.model_dump() for c in _stream(["Month", "ly."], None)]
    assert "cited_by" not in chunks[-1] and len(chunks) == 4
