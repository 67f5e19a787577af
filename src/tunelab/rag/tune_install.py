"""Install a tuned embedder into its knowledge base so that nothing half-written looks complete.

    1. save the model + tokenizer (+ tune.json: base, teacher, held-out figures) into
       <kb>/.tuned-embedder-<stamp>.tmp, then rename it to <kb>/tuned-embedder-<stamp>
       (stamp = local time to the second + 8 random hex digits)
    2. manifest: "tune_pending" = {"dir": ...}        (written atomically: temp file + rename)
    3. the chunks table rewritten with the new vectors (one LanceDB commit), indexes rebuilt
    4. manifest: "tuned_embedder" = {"dir": ..., ...}, "tune_pending" removed
    5. the previously installed tuned folder, if any, deleted

A crash before 2 leaves the KB as it was (a stray folder at most); between 2 and 4 the manifest
says "pending" and queries refuse with a one-line error (`embedders.kb_embedder`) instead of
mixing vectors of two models; rerunning `rag tune --overwrite` completes it (questions cached).
Each install gets a new folder name, so a process that cached the older embedder never reuses it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from tunelab.rag.store import TABLE, KnowledgeBase


def read_rows(store: KnowledgeBase) -> tuple[list[dict], np.ndarray]:
    """(rows with id, source, text, embed_text; their stored vectors (n, dim) float32), in table order.

    embed_text = what the indexer embedded: the `search_text` column (context lines + chunk text)."""
    table = store.table
    if table is None:
        return [], np.zeros((0, int(store.manifest.get("dim", 0))), dtype=np.float32)
    arrow = table.to_arrow()
    ids, sources = arrow.column("id").to_pylist(), arrow.column("source").to_pylist()
    texts, search = arrow.column("text").to_pylist(), arrow.column("search_text").to_pylist()
    rows = [{"id": i, "source": s, "text": t, "embed_text": st.lstrip("\n")}
            for i, s, t, st in zip(ids, sources, texts, search)]
    vectors = np.asarray(arrow.column("vector").to_pylist(), dtype=np.float32)
    return rows, vectors


def _replace_vectors(store: KnowledgeBase, vectors: np.ndarray) -> None:
    """Rewrite the chunks table with `vectors` (same row order as `read_rows`), then rebuild BM25 / ANN."""
    import pyarrow as pa

    arrow = store.table.to_arrow()
    col = arrow.schema.get_field_index("vector")
    flat = pa.array(vectors.astype(np.float32).reshape(-1))
    new = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    typ = arrow.schema.field("vector").type
    arrow = arrow.set_column(col, arrow.schema.field("vector"), new.cast(typ) if new.type != typ else new)
    store._table = store.db.create_table(TABLE, data=arrow, mode="overwrite")
    store.manifest["ann_rows"] = 0  # a new table has no ANN index: refresh_indexes builds one when big enough
    store.refresh_indexes()


def install_tuned(store: KnowledgeBase, model, tokenizer, vectors: np.ndarray, info: dict,
                  sentences=None) -> str:
    """Steps 1-5 of the module docstring; returns the new folder's name (relative to the KB folder).
    `sentences`: the KB's SentenceIndex re-embedded by the tuned model, written with the vectors."""
    name = f"tuned-embedder-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"  # unique, even twice a second
    tmp = store.dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "tune.json").write_text(json.dumps(info, indent=1))
    os.replace(tmp, store.dir / name)

    old = (store.manifest.get("tuned_embedder") or {}).get("dir")
    pending = (store.manifest.get("tune_pending") or {}).get("dir")
    store.manifest["tune_pending"] = {"dir": name}
    store.save_manifest()
    _replace_vectors(store, vectors)
    if sentences is not None:
        sentences.save(store.dir)
        store._sentences = sentences
    store.manifest["tuned_embedder"] = {"dir": name, **info}
    store.manifest.pop("tune_pending", None)
    store.save_manifest()
    for stale in {old, pending} - {None, name}:
        if Path(stale).name == stale:  # a bare folder name inside the KB, never a path elsewhere
            shutil.rmtree(store.dir / stale, ignore_errors=True)
    return name
