import json

import pytest

from tunelab.data.formats import to_examples
from tunelab.data.sources import read_records
from tunelab.errors import TunelabError


def jsonl(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return p


def test_three_record_shapes_normalize_to_messages(tmp_path):
    p = jsonl(tmp_path, [
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
        {"prompt": "c", "completion": "d"},
        {"instruction": "e", "input": "f", "output": "g", "system": "s"},
    ])
    exs = to_examples(read_records(p))
    assert exs[0].messages[-1] == {"role": "assistant", "content": "b"}
    assert exs[1].messages == [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    assert exs[2].messages[0] == {"role": "system", "content": "s"}
    assert exs[2].messages[1]["content"] == "e\n\nf"
    assert exs[1].where == f"{p}:2"


def test_csv_prompt_completion(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('prompt,completion\nhi,"hello, you"\n')
    (ex,) = to_examples(read_records(p))
    assert ex.messages[1]["content"] == "hello, you"


@pytest.mark.parametrize("rows, fragment", [
    (['{"prompt": "a", "completion": "b"}', '{"prompt": "a", "completion": '], ":2: invalid JSON"),
    ([{"prompt": "a"}], "cannot tell the record format"),
    ([{"prompt": "a", "completion": 3}], "field 'completion' must be a string"),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}]}], "empty assistant reply"),
    ([{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}], "roles out of order"),
    ([{"messages": [{"role": "bot", "content": "a"}]}], "role 'bot' is not one of"),
    (["[1, 2]"], "expected a JSON object"),
])
def test_bad_records_give_file_line_errors(tmp_path, rows, fragment):
    p = jsonl(tmp_path, rows)
    with pytest.raises(TunelabError) as e:
        to_examples(read_records(p))
    msg = str(e.value)
    assert fragment in msg and str(p) in msg and "\n" not in msg


def test_empty_missing_nonutf8_and_unknown_type(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(TunelabError, match="the dataset is empty"):
        read_records(tmp_path / "e.jsonl")
    with pytest.raises(TunelabError, match="file not found"):
        read_records(tmp_path / "missing.jsonl")
    (tmp_path / "b.jsonl").write_bytes(b'{"prompt": "ok", "completion": "x"}\n{"prompt": "\xff"}\n')
    with pytest.raises(TunelabError, match=r"b\.jsonl:2: not valid UTF-8"):
        read_records(tmp_path / "b.jsonl")
    (tmp_path / "d.xml").write_text("<a/>")
    with pytest.raises(TunelabError, match="unsupported file type"):
        read_records(tmp_path / "d.xml")


def test_ragged_csv(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("prompt,completion\na,b,c\n")
    with pytest.raises(TunelabError, match=r"r\.csv:2: row has 3 fields, the header has 2"):
        read_records(p)
