"""Packing raw text into fixed blocks: exact contents, boundaries, sources and errors."""

import json

import pytest

from tunelab.data.formats import TextExample
from tunelab.data.packing import pack, read_texts, split_blocks, token_stream
from tunelab.errors import TunelabError


@pytest.fixture(scope="module")
def tok():
    from tunelab.models.tiny import build_tokenizer

    return build_tokenizer()


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_stream_is_documents_joined_by_eos(tok):
    docs = [TextExample("The quick brown fox.", "a:1"), TextExample("Use a small learning rate.", "b:1")]
    stream, where = token_stream(docs, tok)
    a, b = ids(tok, "The quick brown fox."), ids(tok, "Use a small learning rate.")
    assert stream == a + [tok.eos_token_id] + b + [tok.eos_token_id]
    assert where == ["a:1"] * (len(a) + 1) + ["b:1"] * (len(b) + 1)


def test_blocks_cut_the_stream_exactly(tok):
    docs = [TextExample("The quick brown fox jumps over the lazy dog.", "a:1"),
            TextExample("Quantization maps floats to integers.", "b:1"),
            TextExample("def main(): return 0", "c:1")]
    stream, _ = token_stream(docs, tok)
    L = 7
    blocks = pack(docs, tok, L)
    n_full, rest = divmod(len(stream), L)
    assert len(blocks) == n_full + (1 if rest >= 2 else 0)
    for i, b in enumerate(blocks):
        assert b.input_ids == stream[i * L:(i + 1) * L]  # contiguous, no overlap, no gap
        assert b.labels == b.input_ids  # every token learned
    assert all(len(b.input_ids) == L for b in blocks[:n_full])
    assert sum(len(b.input_ids) for b in blocks) == len(stream) - (rest if rest < 2 else 0)
    # a block spanning two documents holds the EOS that separates them
    first_eos = stream.index(tok.eos_token_id)
    assert blocks[first_eos // L].input_ids[first_eos % L] == tok.eos_token_id
    assert blocks[0].where == "a:1 (block 0)"


def test_remainder_of_one_token_is_dropped(tok):
    docs = [TextExample("The quick brown fox.", "a:1")]
    n = len(token_stream(docs, tok)[0])
    assert len(pack(docs, tok, n - 1)) == 1  # n = (n-1) + 1: the 1-token tail has nothing to predict
    assert len(pack(docs, tok, n - 2)) == 2  # 2-token tail kept
    assert len(pack(docs, tok, n)) == 1


def test_split_blocks_is_seeded_and_disjoint(tok):
    docs = [TextExample("The quick brown fox jumps over the lazy dog. " * 20, "a:1")]
    blocks = pack(docs, tok, 8)
    tr, va = split_blocks(blocks, 0.2, seed=3)
    assert len(va) == round(len(blocks) * 0.2) and len(tr) + len(va) == len(blocks)
    assert {id(b) for b in tr}.isdisjoint({id(b) for b in va})
    tr2, va2 = split_blocks(blocks, 0.2, seed=3)
    assert [b.where for b in va2] == [b.where for b in va]
    with pytest.raises(TunelabError, match="leaves no training block"):
        split_blocks(blocks[:1], 0.5, seed=0)


def test_read_texts_from_folder_file_and_records(tmp_path):
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "b.md").write_text("second", encoding="utf-8")
    (d / "a.txt").write_text("first", encoding="utf-8")
    (d / "sub" / "c.txt").write_text("third", encoding="utf-8")
    (d / "skip.json").write_text("{}", encoding="utf-8")
    (d / "empty.txt").write_text("  \n", encoding="utf-8")
    assert [x.text for x in read_texts(d)] == ["first", "second", "third"]  # sorted by path, empties dropped
    assert [x.text for x in read_texts(d / "a.txt")] == ["first"]
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"text": "one"}) + "\n" + json.dumps({"text": "two"}) + "\n", encoding="utf-8")
    docs = read_texts(p)
    assert [x.text for x in docs] == ["one", "two"] and docs[1].where == f"{p}:2"


def test_read_texts_errors_name_the_place(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"body": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(TunelabError, match=r"t.jsonl:2: missing field 'text'"):
        read_texts(p)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TunelabError, match="no .txt or .md file"):
        read_texts(tmp_path / "empty")
    with pytest.raises(TunelabError, match="file not found"):
        read_texts(tmp_path / "missing.txt")
