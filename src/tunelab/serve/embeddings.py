"""`POST /v1/embeddings` and knowledge-base retrieval for chat completions.

Embedders: `minilm-l6` (all-MiniLM-L6-v2, 384 dimensions, unit vectors) and `minilm-l6-static`
(its distilled static table: tunelab.rag.static_embed), loaded on first use, kept for the process.
`encoding_format` "float" gives lists of floats, "base64" the little-endian float32 bytes in
base64 (what the openai client asks for by default and decodes itself).

Knowledge bases (`"knowledge_base": "NAME"` on /v1/chat/completions): tenant "default" reads
`$TUNELAB_HOME/kb/NAME` (what `tunelab rag index --kb NAME` writes), any other tenant
`$TUNELAB_HOME/kb/.tenants/<tenant>/NAME` (index it with `tunelab rag index --dir` there): a
tenant never reaches another's KB. The last user message is the question: the top k chunks
(default 3) replace it with tunelab.rag.ask's prompt (numbered passages + the question; a run's
template may bring its own `extra.rag_prompt`), and the reply carries `citations`; serve/chat.py
then checks the answer's [n] as `tunelab rag ask` does (rag/ask.py cite_or_add_sources: a
`Sources:` line appended when it cites none, `cited_by` on the reply).
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import numpy as np

from tunelab.errors import TunelabError
from tunelab.serve.errors import APIError, not_found
from tunelab.serve.model_names import model_not_found
from tunelab.serve.names import check_name, inside
from tunelab.serve.protocol.chat import Citation
from tunelab.serve.protocol.embeddings import Embedding, EmbeddingResponse
from tunelab.serve.state import DEFAULT_TENANT

EMBEDDERS = ("minilm-l6", "minilm-l6-static")
_lock = threading.Lock()


def embedder(name: str):
    if name not in EMBEDDERS:
        raise model_not_found(name, EMBEDDERS)
    from tunelab.rag.embedders import load_embedder

    with _lock:
        try:
            return load_embedder(name)
        except TunelabError as e:
            raise APIError(400, f"embedder '{name}' is not available here: {e.message}", param="model",
                           code="model_not_available") from None


def embed(name: str, texts: list[str], encoding_format: str, dimensions: int | None) -> EmbeddingResponse:
    """The OpenAI embeddings response for `texts` (blocking: run it in a worker thread)."""
    emb = embedder(name)
    if dimensions is not None and dimensions != emb.dim:
        raise APIError(400, f"'{name}' has {emb.dim} dimensions; 'dimensions' cannot change that",
                       param="dimensions", code="invalid_value")
    vectors = emb.encode(texts)
    n_tokens = sum(len(ids) for ids in emb.tokenizer(texts, add_special_tokens=True)["input_ids"])
    data = []
    for i, v in enumerate(vectors):
        vec = np.asarray(v, dtype="<f4")
        value = base64.b64encode(vec.tobytes()).decode() if encoding_format == "base64" else vec.tolist()
        data.append(Embedding(index=i, embedding=value))
    return EmbeddingResponse(data=data, model=name, usage={"prompt_tokens": n_tokens, "total_tokens": n_tokens})


# ---- knowledge bases -----------------------------------------------------------------------------------------
def kb_root(state, tenant: str) -> Path:
    """The folder of `tenant`'s knowledge bases (module docstring)."""
    root = getattr(state, "kb", None)
    if root is None:
        from tunelab.models.registry import tunelab_home

        root = tunelab_home() / "kb"
    return Path(root) if tenant == DEFAULT_TENANT else Path(root) / ".tenants" / tenant


def retrieve(state, tenant: str, kb: str, question: str, k: int = 3, run_dir: Path | None = None):
    """(the user message that replaces the question, citations) from knowledge base `kb` (blocking)."""
    from tunelab.rag.ask import build_messages, run_prompt
    from tunelab.rag.retrieve import query

    check_name(kb, "knowledge_base")
    root = kb_root(state, tenant)
    folder = inside(root, kb) if root.exists() else root / kb
    if not (folder / "manifest.json").is_file():
        raise not_found("knowledge_base", kb, param="knowledge_base")
    try:
        hits = query(None, question, k=k, directory=folder)
        message = build_messages(question, hits, run_prompt(run_dir))[0]
    except TunelabError as e:
        raise APIError(400, f"knowledge base '{kb}': {e.message}", param="knowledge_base",
                       code="knowledge_base_error") from None
    citations = [Citation(index=h.rank, source=h.source, section=h.section, text=h.text,
                          similarity=round(h.similarity, 4), start=h.start, end=h.end) for h in hits]
    return message, citations
