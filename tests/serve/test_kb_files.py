"""A knowledge base's documents (serve/kb_files.py): a failed upload leaves nothing behind, and documents and
knowledge bases can be deleted."""

from __future__ import annotations

import os
import stat

import pytest

from tunelab.errors import TunelabError

pytest.importorskip("lancedb", reason="the rag extra is not installed")


def _tree(root) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))} if root.exists() else {}


def _index(docs, folder):
    from tunelab.rag.indexer import index

    return lambda: index([docs], directory=folder)


def test_a_refused_upload_leaves_nothing_and_the_next_one_works(tmp_path):
    from tunelab.serve.kb_files import add_documents

    docs, folder = tmp_path / "home" / "kb-docs" / "default" / "notes", tmp_path / "kb" / "notes"
    # an unreadable PDF on a new knowledge base: refused before anything is written, named by its upload name
    with pytest.raises(TunelabError) as e:
        add_documents(docs, folder, [("a.txt", b"Ferries leave at nine."), ("bad.pdf", b"%PDF-1.4 garbage")],
                      _index(docs, folder))
    assert "bad.pdf" in e.value.one_line() and str(tmp_path) not in e.value.one_line()
    assert not (tmp_path / "home").exists() and not (tmp_path / "kb").exists()
    rep = add_documents(docs, folder, [("a.txt", b"Ferries leave at nine.")], _index(docs, folder))
    assert rep.files == 1 and (folder / "manifest.json").is_file()
    assert stat.S_IMODE(os.stat(docs / "a.txt").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(docs).st_mode) == 0o700 and stat.S_IMODE(os.stat(folder.parent).st_mode) == 0o700
    before_docs, before_kb = _tree(docs), (folder / "manifest.json").read_bytes()

    # a failure while indexing (after the documents were written): they are put back as they were
    def broken():
        raise TunelabError("embedder exploded")

    with pytest.raises(TunelabError):
        add_documents(docs, folder, [("a.txt", b"Ferries now leave at ten."), ("b.md", b"# B\n\nbee")], broken)
    assert _tree(docs) == before_docs and (folder / "manifest.json").read_bytes() == before_kb
    rep = add_documents(docs, folder, [("b.md", b"# Buses\n\nBuses leave at noon.")], _index(docs, folder))
    assert rep.files == 2 and sorted(_tree(docs)) == ["a.txt", "b.md"]


def test_delete_a_document_then_the_last_one_takes_the_knowledge_base(tmp_path):
    from tunelab.rag.store import KnowledgeBase
    from tunelab.serve.kb_files import add_documents, delete_document, delete_kb

    docs, folder = tmp_path / "kb-docs" / "n", tmp_path / "kb" / "n"
    add_documents(docs, folder, [("a.txt", b"Ferries leave at nine."), ("b.txt", b"Buses leave at noon.")],
                  _index(docs, folder))
    assert delete_document(docs, folder, "nope.txt") is False
    assert delete_document(docs, folder, "a.txt") is True
    kb = KnowledgeBase.open(directory=folder)
    assert [f["source"] for f in kb.files.values()] == ["b.txt"]
    assert {r["source"] for r in kb.table.search().select(["source"]).limit(100).to_list()} == {"b.txt"}
    assert sorted(p.name for p in docs.iterdir()) == ["b.txt"]
    assert delete_document(docs, folder, "b.txt") is True
    assert not folder.exists() and not docs.exists()
    assert sorted(p.name for p in (tmp_path / "kb").iterdir()) == []
    delete_kb(docs, folder)  # gone already: nothing to do


def test_delete_a_knowledge_base_keeps_documents_outside_the_docs_folder(tmp_path):
    from tunelab.rag.indexer import index
    from tunelab.serve.kb_files import delete_document, delete_kb

    own = tmp_path / "mine"
    own.mkdir()
    (own / "x.txt").write_text("Trains leave at one.")
    (own / "y.txt").write_text("Planes leave at two.")
    folder = tmp_path / "kb" / "cli"
    index([own], directory=folder)  # what `tunelab rag index` makes: the documents are the user's own
    assert delete_document(tmp_path / "kb-docs" / "cli", folder, "x.txt") is True
    assert (own / "x.txt").is_file()  # never the user's file
    delete_kb(tmp_path / "kb-docs" / "cli", folder)
    assert not folder.exists() and (own / "y.txt").is_file()


def test_kb_routes_refuse_a_bad_upload_whole_and_delete_per_tenant(tmp_path):
    from fastapi.testclient import TestClient

    from tests.serve.test_guard import FakePool, _state
    from tunelab.serve.app import create_app
    from tunelab.serve.auth import create_key

    state = _state(tmp_path, auth=True)
    h = {t: {"Authorization": f"Bearer {create_key(state.db_path, t)[1]}"} for t in ("alice", "bob")}
    with TestClient(create_app(state, extra_modules=["tunelab.serve.studio"], pool=FakePool())) as c:
        def post(who, name, files):
            return c.post("/studio/api/kbs", headers=h[who], data={"name": name},
                          files=[("files", f) for f in files])

        r = post("alice", "notes", [("a.txt", b"Ferries leave at nine."), ("bad.pdf", b"%PDF-1.4 not really")])
        assert r.status_code == 400 and "bad.pdf" in r.json()["error"]["message"], r.text
        assert str(tmp_path) not in r.json()["error"]["message"]
        assert not (state.home / "kb-docs").exists()
        assert c.get("/studio/api/kbs", headers=h["alice"]).json()["data"] == []
        r = post("alice", "notes", [("a.txt", b"Ferries leave at nine."), ("b.txt", b"Buses leave at noon.")])
        assert r.status_code == 200 and r.json()["files"] == 2, r.text
        # the next upload to the same knowledge base is not blocked by the refused one
        assert post("alice", "notes", [("c.md", b"# Trains\n\nTrains leave at one.")]).json()["files"] == 3
        # bob sees none of it: 404 for his deletes, and alice's knowledge base stays whole
        assert c.delete("/studio/api/kbs/notes/documents/a.txt", headers=h["bob"]).status_code == 404
        assert c.delete("/studio/api/kbs/notes", headers=h["bob"]).status_code == 404
        assert c.delete("/studio/api/kbs/notes/documents/nope.txt", headers=h["alice"]).status_code == 404
        assert c.delete("/studio/api/kbs/..%2Fx", headers=h["alice"]).status_code in (400, 404)
        r = c.delete("/studio/api/kbs/notes/documents/a.txt", headers=h["alice"])
        assert r.status_code == 200 and r.json() == {"id": "a.txt", "object": "knowledge_base.document",
                                                     "deleted": True, "knowledge_base_deleted": False}
        assert c.get("/studio/api/kbs", headers=h["alice"]).json()["data"][0]["files"] == 2
        r = c.delete("/studio/api/kbs/notes", headers=h["alice"])
        assert r.status_code == 200 and r.json() == {"id": "notes", "object": "knowledge_base", "deleted": True}
        assert c.get("/studio/api/kbs", headers=h["alice"]).json()["data"] == []
        assert not (state.home / "kb-docs" / "alice" / "notes").exists()
        assert c.delete("/studio/api/kbs/notes", headers=h["alice"]).status_code == 404


def test_an_indexing_error_names_no_server_path(tmp_path, monkeypatch):
    from tunelab.serve.errors import APIError
    from tunelab.serve.knowledge import ServingKnowledge
    from tunelab.serve.state import ServeState

    state = ServeState(home=tmp_path / "home", runs=tmp_path / "runs", kb=tmp_path / "kb")
    docs = state.home / "kb-docs" / "alice" / "n"

    def broken(*a, **kw):
        raise TunelabError("cannot read file (Permission denied)", where=str(docs / "a.txt"))

    monkeypatch.setattr("tunelab.rag.indexer.index", broken)
    with pytest.raises(APIError) as e:
        ServingKnowledge(state, "alice").create("n", [("a.txt", b"Ferries leave at nine.")])
    assert e.value.message == "knowledge base 'n': a.txt: cannot read file (Permission denied)", e.value.message
    assert not docs.exists()
