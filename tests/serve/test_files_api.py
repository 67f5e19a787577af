"""`/v1/files` through the official `openai` client (in process, two tenants with their own keys):
upload -> processed or error with the data layer's file:line, list / retrieve / content / delete,
refusals in OpenAI's error shape with nothing written, and another tenant's ids as unknown ones."""

from __future__ import annotations

import json

import httpx2 as httpx
import openai
import pytest

TRAIN = "examples/data/tunebot/train.jsonl"
PREF = "examples/data/preference/train.jsonl"


@pytest.fixture(scope="module")
def files_server(tmp_path_factory, tiny_model_dir):
    """(state, {tenant: openai client}, {tenant: key}, TestClient) of one app with auth on."""
    from fastapi.testclient import TestClient

    from tunelab.serve.app import create_app
    from tunelab.serve.auth import create_key
    from tunelab.serve.state import ServeState

    tmp = tmp_path_factory.mktemp("files")
    state = ServeState(home=tmp / "home", runs=tmp / "runs", base=str(tiny_model_dir), auth=True)
    state.jobs_max_concurrent = 0  # no job runs here
    keys = {t: create_key(state.db_path, t)[1] for t in ("alice", "bob")}
    app = create_app(state, extra_modules=["tunelab.serve.files_api", "tunelab.serve.jobs_api"])
    with TestClient(app) as tc:
        clients = {t: openai.OpenAI(base_url="http://testserver/v1", api_key=k, http_client=tc, max_retries=0)
                   for t, k in keys.items()}
        yield state, clients, keys, tc


def _lines(path: str, n: int) -> bytes:
    return "".join(open(path).readlines()[:n]).encode()


def _stored(state) -> list[str]:
    return sorted(p.name for p in state.files_dir.iterdir())


def test_upload_list_retrieve_content_delete(files_server):
    state, clients, _, _ = files_server
    alice = clients["alice"]
    data = _lines(TRAIN, 5)
    f = alice.files.create(file=("train.jsonl", data), purpose="fine-tune")
    assert f.id.startswith("file-") and f.object == "file"
    assert (f.status, f.status_details, f.bytes, f.filename, f.purpose) == ("processed", None, len(data),
                                                                            "train.jsonl", "fine-tune")
    assert (state.files_dir / f.id).read_bytes() == data  # stored under the id, renamed from its temp name
    assert not [p for p in _stored(state) if p.startswith(".tmp-")]
    assert alice.files.retrieve(f.id).model_dump() == f.model_dump()
    assert f.id in [x.id for x in alice.files.list()]
    assert alice.files.content(f.id).content == data
    assert alice.files.delete(f.id).deleted is True
    assert f.id not in _stored(state)
    with pytest.raises(openai.NotFoundError):
        alice.files.retrieve(f.id)


def test_kinds_of_training_file(files_server):
    """Chat examples, tunelab preference pairs and OpenAI's DPO lines are all processed."""
    state, clients, _, _ = files_server
    from tunelab.serve import jobs_db

    openai_dpo = json.dumps({"input": {"messages": [{"role": "user", "content": "hi"}]},
                             "preferred_output": [{"role": "assistant", "content": "Hello!"}],
                             "non_preferred_output": [{"role": "assistant", "content": "go away"}]}) + "\n"
    c = jobs_db.conn(state.db_path)
    for name, data, kind in (("chat.jsonl", _lines(TRAIN, 3), "sft"), ("pairs.jsonl", _lines(PREF, 3), "preference"),
                             ("dpo.jsonl", openai_dpo.encode() * 2, "openai_dpo"),
                             ("rft.jsonl", b'{"messages": [{"role": "user", "content": "a"}], "answer": "b"}\n' * 2,
                              "prompts")):
        f = clients["alice"].files.create(file=(name, data), purpose="fine-tune")
        assert f.status == "processed", f.status_details
        assert jobs_db.get_file(c, "alice", f.id)["kind"] == kind


@pytest.mark.parametrize("body, where", [
    (b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n{"messages": [\n',
     "bad.jsonl:2: invalid JSON"),
    (b'{"messages": [{"role": "system", "content": "a"}]}\n', "bad.jsonl:1: messages"),  # a user turn: a prompt
    (b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
     b'{"prompt": "p", "chosen": "c", "rejected": "r"}\n', "bad.jsonl:2: cannot tell the record format"),
    (b"\n\n", "the dataset is empty"),
])
def test_bad_file_is_kept_with_status_error(files_server, body, where):
    state, clients, _, _ = files_server
    f = clients["alice"].files.create(file=("bad.jsonl", body), purpose="fine-tune")
    assert f.status == "error"
    assert where in f.status_details
    assert str(state.files_dir) not in f.status_details  # the upload's name, never the server's path
    assert f.id in _stored(state)


def _error(resp: httpx.Response, status: int, param: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    if param is not None:
        assert err["param"] == param
    return err


def test_refused_uploads_write_nothing(files_server):
    state, _, keys, tc = files_server
    auth = {"Authorization": f"Bearer {keys['alice']}"}
    before = _stored(state)
    data = _lines(TRAIN, 2)
    post = lambda **kw: tc.post("/v1/files", headers=auth, **kw)  # noqa: E731
    _error(post(files={"file": ("t.jsonl", data)}), 400, "purpose")  # purpose missing
    _error(post(files={"file": ("t.jsonl", data)}, data={"purpose": "batch"}), 400, "purpose")
    _error(post(data={"purpose": "fine-tune"}), 400, "file")  # no file part
    for name in ("../t.jsonl", "..", "a/../../t.jsonl"):
        err = _error(post(files={"file": (name, data)}, data={"purpose": "fine-tune"}), 400, "file")
        assert "'..'" in err["message"]
    _error(post(files={"file": ("notes.txt", data)}, data={"purpose": "fine-tune"}), 400, "file")
    _error(post(files={"file": (".hidden.jsonl", data)}, data={"purpose": "fine-tune"}), 400, "file")
    limit, state.upload_limit = state.upload_limit, 100
    try:
        _error(post(files={"file": ("t.jsonl", data)}, data={"purpose": "fine-tune"}), 413)
    finally:
        state.upload_limit = limit
    _error(tc.post("/v1/files", headers=auth, content=b"not multipart", ), 400)
    assert tc.post("/v1/files", files={"file": ("t.jsonl", data)}, data={"purpose": "fine-tune"}).status_code == 401
    assert _stored(state) == before


def test_other_tenants_files_are_unknown(files_server):
    state, clients, keys, tc = files_server
    f = clients["alice"].files.create(file=("mine.jsonl", _lines(TRAIN, 2)), purpose="fine-tune")
    bob = clients["bob"]
    for call in (bob.files.retrieve, bob.files.content, bob.files.delete):
        with pytest.raises(openai.NotFoundError) as e:
            call(f.id)
        assert e.value.body["code"] == "file_not_found"
    assert f.id not in [x.id for x in bob.files.list()]
    _error(tc.get("/v1/files", params={"after": f.id}, headers={"Authorization": f"Bearer {keys['bob']}"}), 404,
           "after")
    assert clients["alice"].files.retrieve(f.id).id == f.id  # still there


def test_list_pages_newest_first(files_server):
    _, clients, _, _ = files_server
    bob = clients["bob"]
    ids = [bob.files.create(file=(f"p{i}.jsonl", _lines(TRAIN, 1)), purpose="fine-tune").id for i in range(3)]
    page = bob.files.list(limit=2)
    assert [x.id for x in page.data] == ids[::-1][:2] and page.has_more
    assert [x.id for x in bob.files.list(limit=2, after=ids[1])] == [ids[0]]
    assert [x.id for x in bob.files.list(order="asc")][-3:] == ids
