"""Packing raw text into fixed blocks: exact contents, boundaries, sources and errors."""

import pytest

from tunelab.data.formats import TextExample
from tunelab.data.packing import pack, token_stream
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


def test_tokenizer_without_eos_is_refused(tok):
    import copy

    t = copy.deepcopy(tok)
    t.eos_token = None
    with pytest.raises(TunelabError, match="no EOS token"):
        pack([TextExample("x", "a:1")], t, 8)
