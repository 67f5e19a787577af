"""A knowledge base on disk: a LanceDB table of chunks plus a JSON manifest.

    $TUNELAB_HOME/kb/<name>/        (or any folder given with `--dir`)
      manifest.json                 embedder, chunking settings, and per file: content hash, chunk count
      lance/chunks.lance/           one row per chunk: vector (float32[dim], unit length), text,
                                    search_text (heading path + text, for BM25), source, path,
                                    section, section_path, start, end, n_tokens, file_hash

Why LanceDB: embedded (a folder, no server), columnar on disk, deletes by predicate (so one
changed file is replaced without touching the rest), an ANN index (IVF-PQ, re-ranked exactly
with `refine_factor`) and a BM25 full-text index in the same table.

Indexes: the BM25 index is rebuilt after each change; the ANN index is built once the table
holds `ANN_MIN_ROWS` rows and rebuilt when the row count has grown or shrunk by half since.
Below that an exact scan is fast enough and always exact (rebuild and query times: docs/rag.md,
"The store: why LanceDB" and "Timings behind the code").
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from tunelab.errors import TunelabError

TABLE = "chunks"
ANN_MIN_ROWS = 5000
MANIFEST_VERSION = 1


def kb_dir(name: str | None = None, directory: str | Path | None = None) -> Path:
    """Folder of knowledge base `name` (`$TUNELAB_HOME/kb/<name>`), or `directory` when given."""
    if directory is not None:
        return Path(directory).expanduser()
    from tunelab.models.registry import tunelab_home

    if not name or not re.fullmatch(r"[\w.-]+", name) or name in (".", ".."):
        raise TunelabError(f"invalid knowledge base name {name!r}", where="kb",
                           hint="use letters, digits, '-', '_' or '.', or pass --dir")
    return tunelab_home() / "kb" / name


class KnowledgeBase:
    """Open with `KnowledgeBase.open(name_or_dir)` (must exist) or `.create(dir, settings)`."""

    def __init__(self, directory: Path, manifest: dict):
        self.dir = Path(directory)
        self.manifest = manifest
        self._db = None
        self._table = None
        self._sentences = None

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, name: str | None = None, directory: str | Path | None = None) -> "KnowledgeBase":
        d = kb_dir(name, directory)
        mf = d / "manifest.json"
        if not mf.exists():
            raise TunelabError(f"unknown knowledge base {name or str(d)!r} (no {mf})", where="kb",
                               hint="create it with `tunelab rag index DOCS... --kb NAME`")
        try:
            manifest = json.loads(mf.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise TunelabError(f"corrupt manifest ({e})", where=str(mf), hint="re-index the knowledge base") from e
        return cls(d, manifest)

    @classmethod
    def open_or_create(cls, directory: Path, settings: dict) -> "KnowledgeBase":
        """Open the KB at `directory`; start empty when absent or built with other `settings`."""
        mf = directory / "manifest.json"
        if mf.exists():
            kb = cls.open(directory=directory)
            if all(kb.manifest.get(k) == v for k, v in settings.items()):
                return kb
            kb.drop_all()  # other embedder or chunking: nothing can be reused
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory, {"version": MANIFEST_VERSION, **settings, "files": {}})

    def save_manifest(self) -> None:
        tmp = self.dir / "manifest.json.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=1, sort_keys=True))
        os.replace(tmp, self.dir / "manifest.json")

    @property
    def files(self) -> dict[str, dict]:
        return self.manifest.setdefault("files", {})

    # ------------------------------------------------------------ table
    @property
    def db(self):
        if self._db is None:
            try:
                import lancedb
            except ImportError as e:
                raise TunelabError("LanceDB is not installed", where="rag",
                                   hint="pip install 'tunelab[rag]'") from e

            self._db = lancedb.connect(str(self.dir / "lance"))
        return self._db

    @property
    def table(self):
        """The chunks table, or None while the KB holds nothing."""
        if self._table is None:
            try:
                self._table = self.db.open_table(TABLE)
            except (FileNotFoundError, ValueError):
                return None
        return self._table

    def count(self) -> int:
        return 0 if self.table is None else self.table.count_rows()

    def add(self, rows: list[dict]) -> None:
        """Append chunk rows (dicts with the columns in the module docstring)."""
        if not rows:
            return
        if self.table is None:
            self._table = self.db.create_table(TABLE, data=rows, mode="overwrite")
        else:
            self.table.add(rows)

    def delete_paths(self, paths: list[str]) -> None:
        """Remove every chunk whose `path` is in `paths`."""
        if not paths or self.table is None:
            return
        for b in range(0, len(paths), 200):
            quoted = ", ".join("'" + p.replace("'", "''") + "'" for p in paths[b:b + 200])
            self.table.delete(f"path IN ({quoted})")

    def drop_all(self) -> None:
        from tunelab.rag.sentences import FILE

        if self.table is not None:
            self.db.drop_table(TABLE)
        self._table = None
        (self.dir / FILE).unlink(missing_ok=True)
        self._sentences = None
        self.manifest["files"] = {}

    @property
    def sentences(self):
        """The KB's SentenceIndex (rag/sentences.py), loaded once; None when it keeps none."""
        if not self.manifest.get("sentences"):
            return None
        if self._sentences is None:
            from tunelab.rag.sentences import SentenceIndex

            self._sentences = SentenceIndex.load(self.dir, int(self.manifest.get("dim", 0)))
        return self._sentences

    def refresh_indexes(self) -> None:
        """Rebuild BM25; (re)build the ANN index when big enough (see module docstring); compact."""
        t = self.table
        if t is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t.create_fts_index("search_text", replace=True)
            n = t.count_rows()
            built = int(self.manifest.get("ann_rows", 0))
            if n >= ANN_MIN_ROWS and (not built or n > 1.5 * built or n < built / 1.5):
                parts = max(4, n // 256)  # lance trains on 256 samples per partition: 12.7k rows -> 49
                t.create_index(metric="cosine", num_partitions=parts, num_sub_vectors=self.manifest["dim"] // 8,
                               replace=True)
                self.manifest["ann_rows"] = n
            elif n < ANN_MIN_ROWS:
                self.manifest["ann_rows"] = 0
            try:
                t.optimize()
            except Exception:  # compaction is an optimisation; a failure leaves a valid table
                pass

    # ------------------------------------------------------------ search
    def search_vector(self, vector: np.ndarray, limit: int, exact: bool = False) -> list[dict]:
        """Nearest chunks by cosine distance (`_distance` = 1 - cosine similarity); `exact` skips the ANN index."""
        if self.table is None:
            return []
        q = self.table.search(vector.astype(np.float32), vector_column_name="vector").distance_type("cosine")
        if exact:
            q = q.bypass_vector_index()
        elif self.manifest.get("ann_rows"):
            # probe a quarter of the partitions, re-rank 10 x limit candidates with exact distances
            q = q.nprobes(max(4, self.manifest["ann_rows"] // 1024)).refine_factor(10)
        return q.limit(limit).to_list()

    def search_text(self, text: str, limit: int) -> list[dict]:
        """Best BM25 matches of `text` against `search_text` (`_score` = BM25)."""
        if self.table is None or not text.strip():
            return []
        clean = re.sub(r"[^\w\s]", " ", text)  # the FTS query parser treats punctuation as syntax
        if not clean.strip():
            return []
        try:
            return self.table.search(clean, query_type="fts", fts_columns="search_text").limit(limit).to_list()
        except Exception:  # no FTS index yet (e.g. an interrupted index run): vectors only
            return []

    def rows_for(self, ids: list[str], columns: list[str] | None = None) -> list[dict]:
        """The chunk rows with these ids (every column, or `columns`)."""
        if not ids or self.table is None:
            return []
        quoted = ", ".join("'" + i + "'" for i in ids)
        q = self.table.search().where(f"id IN ({quoted})")
        return (q.select(columns) if columns else q).limit(len(ids)).to_list()

    def vectors_for(self, ids: list[str]) -> dict[str, np.ndarray]:
        return {r["id"]: np.asarray(r["vector"], dtype=np.float32) for r in self.rows_for(ids, ["id", "vector"])}
