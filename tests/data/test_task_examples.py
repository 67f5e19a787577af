"""load_splits returns the Example type of cfg.task, with file:line errors for bad records."""

import json

import pytest

from tunelab.config import from_dict
from tunelab.data.dataset import load_splits
from tunelab.data.formats import ChatExample, ClassifyExample, PreferenceExample, TextExample
from tunelab.errors import TunelabError


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def cfg(tmp_path, task, train, **data):
    return from_dict({"task": task, "base_dir": str(tmp_path), "data": {"train": str(train), **data}})


def test_sft_gives_chat_examples(tmp_path):
    p = jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b"}] * 3)
    train, val = load_splits(cfg(tmp_path, "sft", p))
    assert all(isinstance(e, ChatExample) for e in train) and len(train) == 3 and val == []


def test_pretrain_records_and_text_directory(tmp_path):
    p = jsonl(tmp_path / "d.jsonl", [{"text": "one"}, {"text": "two"}])
    train, _ = load_splits(cfg(tmp_path, "pretrain", p))
    assert [e.text for e in train] == ["one", "two"] and isinstance(train[0], TextExample)
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "a.md").write_text("# A\nalpha")
    (d / "sub" / "b.txt").write_text("beta")
    (d / "skip.bin").write_bytes(b"\x00")
    train, _ = load_splits(cfg(tmp_path, "pretrain", d))
    assert [e.text for e in train] == ["# A\nalpha", "beta"]
    assert train[1].where.endswith("b.txt")


def test_classify_labels_become_strings_and_are_checked(tmp_path):
    p = jsonl(tmp_path / "c.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": 1},
                                     {"text": "c", "label": True}])
    train, _ = load_splits(cfg(tmp_path, "classify", p))
    assert [(e.text, e.label) for e in train] == [("a", "pos"), ("b", "1"), ("c", "true")]
    assert isinstance(train[0], ClassifyExample)
    c = from_dict({"task": "classify", "data": {"train": str(p)}, "classify": {"labels": ["pos", "1"]}})
    with pytest.raises(TunelabError) as e:
        load_splits(c)
    assert f"{p}:3" in str(e.value) and "'true' is not in classify.labels" in str(e.value)


def test_preference_prompt_string_or_messages(tmp_path):
    p = jsonl(tmp_path / "p.jsonl", [
        {"prompt": "q", "chosen": "good", "rejected": "bad"},
        {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q2"}],
         "chosen": [{"role": "assistant", "content": "yes"}], "rejected": [{"role": "assistant", "content": "no"}]},
    ])
    for task in ("reward", "dpo"):
        train, _ = load_splits(cfg(tmp_path, task, p))
        assert all(isinstance(e, PreferenceExample) for e in train)
        assert train[0].prompt == [{"role": "user", "content": "q"}]
        assert (train[1].prompt[-1]["content"], train[1].chosen, train[1].rejected) == ("q2", "yes", "no")


def test_validation_file_and_seeded_split_per_task(tmp_path):
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(10)]
    p = jsonl(tmp_path / "c.jsonl", rows)
    a = load_splits(cfg(tmp_path, "classify", p, val_split=0.3))
    b = load_splits(cfg(tmp_path, "classify", p, val_split=0.3))
    assert [e.text for e in a[1]] == [e.text for e in b[1]] and len(a[1]) == 3 and len(a[0]) == 7
    assert not {e.text for e in a[0]} & {e.text for e in a[1]}
    v = jsonl(tmp_path / "v.jsonl", rows[:2])
    train, val = load_splits(cfg(tmp_path, "classify", p, validation=str(v)))
    assert len(train) == 10 and [e.label for e in val] == ["0", "1"]


def test_format_must_fit_the_task(tmp_path):
    p = jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    with pytest.raises(TunelabError, match="format 'text' is for task pretrain, not sft"):
        load_splits(cfg(tmp_path, "sft", p, format="text"))
