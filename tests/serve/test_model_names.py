"""Model names from requests (serve/model_names.py): only the served base or an alias of `tunelab models`,
never a server path; every other name is the same 404 (a missing path, a folder without config.json,
another tenant's model, a non-UTF-8 file, 5,000 characters), and the tokenizer cache is bounded and
keyed by what is loaded."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.serve.test_guard import TRAIN, FakePool, _state


@pytest.fixture(scope="module")
def app_client(tmp_path_factory, tiny_model_dir):
    from fastapi.testclient import TestClient

    from tunelab.serve.app import create_app
    from tunelab.serve.auth import create_key

    tmp = tmp_path_factory.mktemp("model-names")
    state = _state(tmp, auth=True)
    state.base = str(tiny_model_dir)
    # another tenant's full fine-tune: a model folder with a config.json on the server's disk
    bobs = state.tenant_runs("bob") / "full-ft" / "model"
    shutil.copytree(tiny_model_dir, bobs)
    (tmp / "not-utf8.bin").write_bytes(b"\xff\xfe\x00garbage")
    (tmp / "folder").mkdir()
    keys = {t: {"Authorization": f"Bearer {create_key(state.db_path, t)[1]}"} for t in ("alice", "bob")}
    with TestClient(create_app(state, pool=FakePool())) as c:
        f = c.post("/v1/files", headers=keys["alice"], files={"file": ("t.jsonl", TRAIN)},
                   data={"purpose": "fine-tune"}).json()
        yield c, state, keys, f["id"], {"bobs": str(bobs), "missing": str(tmp / "nowhere"),
                                        "no-config": str(tmp / "folder"), "not-utf8": str(tmp / "not-utf8.bin")}


def _probes(paths: dict) -> dict:
    return {**paths, "long": "x" * 5000, "newline": "smollm2-135m-instruct\n", "hub": "HuggingFaceTB/SmolLM2-135M",
            "dotdot": "../../etc", "slashes": None}


def test_only_the_base_or_an_alias(tiny_model_dir, tmp_path):
    from tunelab.models.registry import ALIASES
    from tunelab.serve.errors import APIError
    from tunelab.serve.model_names import check_model

    state = _state(tmp_path, auth=False)
    state.base = str(tiny_model_dir)
    assert check_model(state, state.base) == str(tiny_model_dir.resolve())
    alias = next(iter(ALIASES))
    assert check_model(state, alias) == alias
    for name in (str(tiny_model_dir) + "/", "//" + str(tiny_model_dir).lstrip("/"), str(tiny_model_dir.parent),
                 "x" * 5000, alias + "\n", "owner/name"):
        with pytest.raises(APIError) as e:
            check_model(state, name)
        assert e.value.status == 404 and e.value.code == "model_not_found"
        said = f"No such model: '{name if len(name) <= 64 else name[:64] + '...'}'"  # its own words
        if name == alias + "\n":  # close to an alias: suggested (never the base, a server path here)
            said += f"; did you mean '{alias}'?"
        assert e.value.message == said
    with pytest.raises(APIError) as e:
        check_model(state, "")
    assert e.value.status == 400


def test_the_studio_and_jobs_take_no_server_path(app_client, tiny_model_dir):
    c, state, keys, fid, paths = app_client
    probes = _probes(paths)
    probes["slashes"] = "/" + str(tiny_model_dir).replace("/", "//")  # the base, spelled another way
    for what, name in probes.items():
        answers = [
            c.get("/studio/api/memory", params={"model": name}, headers=keys["alice"]),
            c.get(f"/studio/api/files/{fid}/inspect", params={"model": name}, headers=keys["alice"]),
            c.post("/v1/fine_tuning/jobs", headers={**keys["alice"], "Content-Type": "application/json"},
                   content=json.dumps({"model": name, "training_file": fid})),
        ]
        for r in answers:
            assert r.status_code == 404, (what, r.text)
            err = r.json()["error"]
            assert (err["code"], err["param"]) == ("model_not_found", "model"), (what, err)
            assert "/" not in err["message"].replace(name[:64], ""), (what, err)  # no server path
            assert len(err["message"]) < 120, what
    # the base and its tokenizer still work, and the cache holds what was loaded, once
    from tunelab.serve import model_names

    r = c.get(f"/studio/api/files/{fid}/inspect", params={"model": state.base}, headers=keys["alice"])
    assert r.status_code == 200 and r.json()["model"] == state.base, r.text
    r = c.get(f"/studio/api/files/{fid}/inspect", params={"model": state.base}, headers=keys["alice"])
    assert r.status_code == 200
    assert list(model_names._tokenizers).count(str(tiny_model_dir.resolve())) == 1
    assert len(model_names._tokenizers) <= model_names.TOKENIZERS


def test_did_you_mean_names_only_the_base_or_an_alias(app_client, tiny_model_dir, tmp_path):
    """The 404 suggests a close alias (or the base when it is no path), never a path, a hub id or a run
    (bob's full fine-tune included), and echoes at most 64 characters of the suggestion too."""
    from tunelab.serve.errors import APIError
    from tunelab.serve.model_names import check_model

    c, state, keys, fid, paths = app_client
    typo = "smollm2-135m-instrut"
    for r in (c.get("/studio/api/memory", params={"model": typo}, headers=keys["alice"]),
              c.get(f"/studio/api/files/{fid}/inspect", params={"model": typo}, headers=keys["alice"]),
              c.post("/v1/fine_tuning/jobs", headers=keys["alice"], json={"model": typo, "training_file": fid})):
        assert r.status_code == 404, r.text
        err = r.json()["error"]
        assert (err["code"], err["param"]) == ("model_not_found", "model")
        assert err["message"] == f"No such model: '{typo}'; did you mean 'smollm2-135m-instruct'?"
    for name in ("full-ft", "full_ft", str(tiny_model_dir)[:-1], str(tiny_model_dir) + "x"):
        r = c.post("/v1/fine_tuning/jobs", headers=keys["alice"], json={"model": name, "training_file": fid})
        assert r.status_code == 404 and "did you mean" not in r.json()["error"]["message"], (name, r.text)
    # a base that is no path (a hub id) is a candidate; a long one is shown cut at 64 characters
    st = _state(tmp_path, auth=False)
    st.base = "org/" + "m" * 80
    with pytest.raises(APIError) as e:
        check_model(st, "org/" + "m" * 79)
    assert e.value.message.endswith(f"; did you mean '{('org/' + 'm' * 80)[:64]}...'?"), e.value.message
    with pytest.raises(APIError) as e:
        check_model(st, "zzzz")
    assert e.value.message == "No such model: 'zzzz'"


def test_the_tokenizer_cache_is_bounded(tmp_path, monkeypatch):
    from tunelab.serve import model_names

    loaded = []
    monkeypatch.setattr(model_names, "_tokenizers", model_names.OrderedDict())
    monkeypatch.setattr("tunelab.models.registry.resolve", lambda name: name)
    monkeypatch.setattr("tunelab.models.load.load_tokenizer", lambda r: loaded.append(r) or object())
    names = [f"m{i}" for i in range(10)]
    monkeypatch.setattr("tunelab.models.registry.ALIASES", {n: None for n in names})
    state = _state(tmp_path, auth=False)
    for n in names + names[-2:]:
        model_names.tokenizer(state, n)
    assert len(model_names._tokenizers) == model_names.TOKENIZERS and loaded == names  # the last two: cached


def test_no_server_path_in_the_run_page_or_an_export(tmp_path):
    """The run page's config and report, and an export's reply or error, name the server's folders as
    runs / <home> / <kb>, never by their absolute paths."""
    from fastapi.testclient import TestClient

    from tunelab.serve.app import create_app
    from tunelab.serve.names import hide_paths

    state = _state(tmp_path, auth=False)
    run = state.runs / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"task: sft\nmodel:\n  name: smollm2-135m-instruct\nmethod:\n  name: lora\n"
                                     f"data:\n  train: {state.home}/jobs/ftjob-1/train.jsonl\n"
                                     f"train:\n  output_dir: {state.runs.resolve()}\n")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    (run / "report.md").write_text(f"# r1\n\nTrained on {state.home}/jobs/ftjob-1/train.jsonl\n")
    (run / "DONE").write_text("")
    with TestClient(create_app(state, extra_modules=["tunelab.serve.studio"], pool=FakePool())) as c:
        page = c.get("/studio/f/runs/r1").text
        assert "&lt;home&gt;/jobs/ftjob-1/train.jsonl" in page and str(tmp_path) not in page, page
        r = c.post("/studio/api/runs/r1/export", json={"to": "gguf"})  # no adapter: refused
        assert r.status_code == 400 and str(tmp_path) not in r.text, r.text
    assert hide_paths(f"{state.runs}/r1 and {state.home.resolve()}/x", state) == "runs/r1 and <home>/x"
