"""Property tests of the data readers (hypothesis): any bytes as a .jsonl / .json / .csv / .tsv file give
records or a one-line TunelabError, never another exception; so do the records' conversion to examples.
Plus the inputs that used to escape as ValueError / RecursionError: huge integers, deep nesting, lone
surrogates, bytes that are not UTF-8."""

from __future__ import annotations

import json

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tunelab.data.formats import to_examples  # noqa: E402
from tunelab.data.sources import read_records  # noqa: E402
from tunelab.errors import TunelabError  # noqa: E402

SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# JSON-looking text: the readers' interesting paths (objects, chat keys, odd values), not only noise
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.sampled_from(["messages", "role", "content", "prompt", "completion",
                                                        "chosen", "rejected", "text", "data", "x"]), inner,
                                       max_size=3), max_leaves=12)
_pieces = st.sampled_from([b"{", b"}", b"[", b"]", b'"', b",", b":", b"\n", b"\r\n", b"\\u", b"d800", b"9" * 50,
                           b"9" * 4400, b"[" * 300,
                           b'"messages"', b'"role"', b'"user"', b'"content"', b"\xff", b"\xed\xa0\x80", b"\x00",
                           b"\t", b"a,b\n", b'"a""b"', b"\xef\xbb\xbf"])


def _check(tmp_path, suffix: str, data: bytes) -> None:
    p = tmp_path / f"fuzz{suffix}"
    p.write_bytes(data)
    try:
        records = read_records(p)
    except TunelabError as e:
        assert "\n" not in e.one_line()
        return
    assert records
    for task in ("sft", "preference", "pretrain"):
        try:
            to_examples(records, task=task)
        except TunelabError as e:
            assert "\n" not in e.one_line()


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), data=st.binary(max_size=400))
def test_any_bytes_give_records_or_a_tunelab_error(tmp_path, suffix, data):
    _check(tmp_path, suffix, data)


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), parts=st.lists(_pieces, max_size=40))
def test_json_shaped_bytes_give_records_or_a_tunelab_error(tmp_path, suffix, parts):
    _check(tmp_path, suffix, b"".join(parts))


@FUZZ
@given(values=st.lists(_json, min_size=1, max_size=4), as_list=st.booleans())
def test_any_json_values_give_records_or_a_tunelab_error(tmp_path, values, as_list):
    if as_list:
        _check(tmp_path, ".json", json.dumps(values).encode())
    else:
        _check(tmp_path, ".jsonl", "\n".join(json.dumps(v) for v in values).encode())


@pytest.mark.parametrize("suffix, data, said", [
    (".jsonl", b'{"messages": [], "n": ' + b"1" * 5000 + b"}\n", "digits"),
    (".json", b'[{"n": ' + b"1" * 5000 + b"}]", "digits"),
    (".jsonl", b'{"ok": 1}\n{"x": ' + b"[" * 100_000 + b"\n", "nested deeper"),
    (".json", b"[" * 100_000, "nested deeper"),
    (".jsonl", b'{"x": ' + b"[" * 200 + b"]" * 200 + b"}\n", "nested deeper"),
    (".jsonl", b'{"messages": [{"role": "user", "content": "a\\ud800"}]}\n', "lone surrogate"),
    (".json", b'[{"\\udfff": 1}]', "lone surrogate"),
    (".jsonl", b'{"ok": 1}\n{"text": "caf\xe9"}\n', "not valid UTF-8"),
    (".csv", b"prompt,completion\nhi,caf\xe9\n", "not valid UTF-8"),
])
def test_what_the_json_parser_cannot_take_is_a_bad_record(tmp_path, suffix, data, said):
    p = tmp_path / f"bad{suffix}"
    p.write_bytes(data)
    with pytest.raises(TunelabError) as e:
        read_records(p)
    line = e.value.one_line()
    assert said in line and str(p) in line and "\n" not in line
    if suffix == ".jsonl" and data.startswith(b'{"ok"'):
        assert f"{p}:2" in line  # the line of the bad record
