"""Record shapes (sharegpt, columns), sources (parquet, directories, hub ids), mixtures, dedupe, train_on: last."""

import json
import os
import subprocess
import sys

import pytest

from tunelab.config import from_dict
from tunelab.data.dataset import load_data, load_splits
from tunelab.errors import TunelabError


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pc(n, tag):
    return [{"prompt": f"{tag}{i}", "completion": f"r{i}"} for i in range(n)]


def cfg(tmp_path, train, task="sft", **data):
    return from_dict({"task": task, "base_dir": str(tmp_path), "data": {"train": train, **data}})


def test_sharegpt_roles_map_to_messages(tmp_path):
    p = jsonl(tmp_path / "s.jsonl", [{"conversations": [
        {"from": "system", "value": "s"}, {"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
        {"from": "user", "value": "c"}, {"from": "assistant", "value": "d"}]}])
    (ex,) = load_splits(cfg(tmp_path, str(p)))[0]
    assert [m["role"] for m in ex.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert ex.messages[-1]["content"] == "d"


def test_columns_rename_before_detection(tmp_path):
    p = jsonl(tmp_path / "q.jsonl", [{"question": "q", "answer": "a", "id": 1}])
    (ex,) = load_splits(cfg(tmp_path, str(p), columns={"prompt": "question", "completion": "answer"}))[0]
    assert ex.messages == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(TunelabError, match=r"q\.jsonl:1: missing column 'body' \(mapped to 'text'"):
        load_splits(cfg(tmp_path, str(p), task="pretrain", columns={"text": "body"}))


def test_parquet_and_directory_of_data_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "mix"
    d.mkdir()
    pq.write_table(pa.Table.from_pylist(pc(3, "p")), d / "a.parquet")
    jsonl(d / "b.jsonl", pc(2, "j"))
    (d / "notes.txt").write_text("ignored for sft")
    train, _ = load_splits(cfg(tmp_path, "mix"))
    assert [e.messages[0]["content"] for e in train] == ["p0", "p1", "p2", "j0", "j1"]
    assert train[1].where == f"{d / 'a.parquet'}:row 2"


def test_weights_subsample_repeat_and_are_seeded(tmp_path):
    a, b = jsonl(tmp_path / "a.jsonl", pc(10, "a")), jsonl(tmp_path / "b.jsonl", pc(4, "b"))
    spec = [{"path": str(a), "weight": 0.3}, {"path": str(b), "weight": 2.5}]
    s = load_data(cfg(tmp_path, spec))
    users = [e.messages[0]["content"] for e in s.train]
    assert sum(u.startswith("a") for u in users) == 3  # round(0.3 x 10)
    assert sum(u.startswith("b") for u in users) == 10  # round(2.5 x 4) = 2 copies + 2 sampled
    assert all(users.count(f"b{i}") >= 2 for i in range(4))
    assert [(x.taken, x.read) for x in s.sources] == [(3, 10), (10, 4)]
    again = [e.messages[0]["content"] for e in load_splits(cfg(tmp_path, spec))[0]]
    other = [e.messages[0]["content"] for e in load_splits(cfg(tmp_path, spec, seed=7))[0]]
    assert again == users and other != users


def test_val_split_happens_before_weights_repeat(tmp_path):
    a = jsonl(tmp_path / "a.jsonl", pc(10, "a"))
    train, val = load_splits(cfg(tmp_path, [{"path": str(a), "weight": 3}], val_split=0.2))
    assert len(val) == 2 and len(train) == 24  # 8 train examples x 3
    assert not {e.messages[0]["content"] for e in val} & {e.messages[0]["content"] for e in train}


def test_dedupe_counts_duplicates_and_validation_overlap(tmp_path):
    a = jsonl(tmp_path / "a.jsonl", pc(3, "x") + pc(2, "x"))  # x0, x1 twice
    v = jsonl(tmp_path / "v.jsonl", pc(1, "x"))  # x0 also in validation
    s = load_data(cfg(tmp_path, str(a), validation=str(v), dedupe=True))
    assert (s.duplicates_dropped, s.overlap_dropped) == (2, 1)
    assert [e.messages[0]["content"] for e in s.train] == ["x1", "x2"]
    assert len(load_data(cfg(tmp_path, str(a))).train) == 5  # off by default


def test_train_on_last_learns_only_the_final_reply(tiny_model_dir):
    from transformers import AutoTokenizer

    from tunelab.data.formats import ChatExample
    from tunelab.data.templates import build_template
    from tunelab.data.tokenize import IGNORE, tokenize_example

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    t = build_template("chatml", tok)
    ex = ChatExample([{"role": "user", "content": "a"}, {"role": "assistant", "content": "first reply"},
                      {"role": "user", "content": "b"}, {"role": "assistant", "content": "last"}])
    every = tokenize_example(ex, t, tok, 512, train_on="reply")
    last = tokenize_example(ex, t, tok, 512, train_on="last")
    learned = tok.decode([i for i, lab in zip(last.input_ids, last.labels) if lab != IGNORE])
    assert last.input_ids == every.input_ids
    assert 0 < last.n_target < every.n_target and "last" in learned and "first" not in learned


def test_hub_id_offline_is_one_clear_error(tmp_path):
    code = ("from tunelab.data.sources import read_source\n"
            "from tunelab.errors import TunelabError\n"
            "try:\n    read_source('hf:someone/some-dataset')\n"
            "except TunelabError as e:\n    print(e.one_line())\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    out = r.stdout.strip().splitlines()
    assert len(out) == 1, r.stdout + r.stderr
    assert "cannot reach the Hugging Face hub" in out[0] and "someone/some-dataset" in out[0]
    assert "local" in out[0] and out[0].startswith("data.train:")


def test_hub_id_without_network_fails_fast_in_one_line(tmp_path):
    """No HF_HUB_OFFLINE, but the hub's host does not resolve: one line at once, not a minute of retries."""
    import time

    code = ("from tunelab.data.sources import read_source\n"
            "from tunelab.errors import TunelabError\n"
            "try:\n    read_source('hf:someone/some-dataset')\n"
            "except TunelabError as e:\n    print(e.one_line())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                                                             "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="https://hub.tunelab-test.invalid", HF_HOME=str(tmp_path / "hf"))
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    out = r.stdout.strip().splitlines()
    assert len(out) == 1 and "cannot reach the Hugging Face hub" in out[0], r.stdout + r.stderr
    assert "Errno" not in r.stdout + r.stderr and time.monotonic() - t < 30  # imports included


def test_bare_id_is_a_hub_id_only_when_no_such_path(tmp_path):
    from tunelab.data.sources import is_hub_id

    assert is_hub_id("hf:a/b") and is_hub_id("owner/name")
    assert not is_hub_id("data/train.jsonl") and not is_hub_id("/abs/path")


@pytest.mark.parametrize("train, fragment", [
    ([{"path": "a.jsonl", "weight": -1}], "data.train[0].weight: Input should be greater than 0"),
    ([{"weight": 2}], "data.train[0].path: Field required"),
    ([], "data.train is an empty list"),
])
def test_bad_mixture_specs_are_config_errors(train, fragment):
    with pytest.raises(TunelabError) as e:
        from_dict({"data": {"train": train}})
    assert fragment in str(e.value) and "\n" not in str(e.value)
