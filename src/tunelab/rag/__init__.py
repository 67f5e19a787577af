"""Knowledge bases: index documents, retrieve chunks, answer with citations, measure retrieval.

The Python API mirrors `tunelab rag ...`:

    from tunelab import rag
    rag.index(["docs/"], kb="notes")                       # tunelab rag index docs/ --kb notes
    rag.query("notes", "how do I ...?", k=3, cutoff=0.5)   # tunelab rag query notes "..." -k 3
    rag.ask("notes", "how do I ...?", run="runs/persona")  # tunelab rag ask notes "..." --run ...
    rag.evaluate("notes", "qa.jsonl", k=3)                  # tunelab rag eval notes --questions qa.jsonl
    rag.tune("notes", teacher="smollm2-135m-instruct")      # tunelab rag tune notes
    rag.QueryRewriter("multi", generator).query("notes", "how do I ...?")   # ... --rewrite multi

Pipeline: ingest.py (read + clean) -> chunk.py (token chunks) -> embed.py (vectors) ->
store.py (LanceDB on disk) <- retrieve.py (vector / hybrid BM25, reranker hook) <- ask.py, evaluate.py.
"""

from __future__ import annotations

from tunelab.rag.ask import Answer, ask, build_messages
from tunelab.rag.evaluate import evaluate, load_questions
from tunelab.rag.indexer import IndexReport, index
from tunelab.rag.retrieve import Hit, query
from tunelab.rag.rewrite import QueryRewriter
from tunelab.rag.tune import TuneOptions, TuneReport, tune

__all__ = ["Answer", "Hit", "IndexReport", "QueryRewriter", "TuneOptions", "TuneReport", "ask", "build_messages",
           "evaluate", "index", "load_questions", "query", "tune"]
