"""The `tokenizer.*` metadata of a GGUF file, from a transformers tokenizer folder.

Written as llama.cpp's convert_hf_to_gguf.py writes a GPT-2 style byte-level BPE vocabulary
(`_set_vocab_gpt2`), which is what SmolLM2, Llama 3, Qwen2 and tunelab's tiny test models use:

    tokenizer.ggml.model          "gpt2"  (byte-level BPE)
    tokenizer.ggml.pre            the pre-tokenizer (the regex that splits text before BPE), by name
    tokenizer.ggml.tokens         every id's token text, padded with "[PAD<i>]" up to the model's vocab_size
    tokenizer.ggml.token_type     1 normal, 3 control (special added tokens), 4 user-defined, 5 unused
    tokenizer.ggml.merges         "a b" per merge rule, in rank order
    tokenizer.ggml.{bos,eos,unknown,padding}_token_id   the tokenizer's own special tokens
    tokenizer.ggml.add_bos_token / add_eos_token        what the tokenizer does when encoding a text
    tokenizer.chat_template       the folder's chat template (for a merged run: the run's trained template)

The pre-tokenizer name is found the way llama.cpp finds it: encode a fixed probe text and look the
SHA-256 of the ids up in a table of known tokenizers. When the hash is unknown and the folder's
pre-tokenizer is plain GPT-2 ByteLevel (regex on, no prefix space), it is "gpt-2"; when it is a Split
on llama.cpp's own regex for "qwen2" or "llama-bpe" before a regex-free ByteLevel, that name; anything
else is refused, since a wrong name would tokenize some texts differently in llama.cpp.

A sentencepiece vocabulary saved as tokenizer.json (BPE with byte fallback over "\u2581"-spaced text:
Gemma, Llama 2) is written as _set_vocab_sentencepiece writes it (`_add_sentencepiece`):

    tokenizer.ggml.model "llama", pre "default", tokens, scores (-id), token_type (2 unknown, 6 byte),
    add_space_prefix, + the merges (so transformers' loader rebuilds exactly this tokenizer)

A folder with only `tokenizer.model` (no tokenizer.json) is refused.
"""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path

from tunelab.errors import TunelabError

# llama.cpp's probe text (convert_hf_to_gguf.py, get_vocab_base_pre): whitespace runs, emoji, digit
# groups, several scripts and English contractions, which is where pre-tokenizers disagree.
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
    "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? "
    "'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)

# sha256(str(ids of CHKTXT)) -> tokenizer.ggml.pre, copied from get_vocab_base_pre (the ones a
# Llama / Mistral / Qwen2 checkpoint carries)
KNOWN_PRE = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Meta-Llama-3-8B
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",  # Smaug-Llama-3-70B
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM / SmolLM2
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # openai-community/gpt2
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 / Qwen2
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3-Embedding
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral-Nemo
}

# llama.cpp's split regex per tokenizer.ggml.pre (llama-vocab.cpp), for a tokenizer that states its regex
# (Sequence[Split(regex), ByteLevel(use_regex=False)], as transformers' Qwen2 / Llama 3 tokenizers save it)
# when the probe hash is not in KNOWN_PRE (a vocabulary of its own with that splitter)
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLIT_PRE = {_LLAMA3_SPLIT: "llama-bpe", _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}"): "qwen2"}

# gguf.TokenType values
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _looks_special(token: str) -> bool:
    """llama.cpp's does_token_look_special: added tokens some models forget to mark special."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<｜") and token.endswith("｜>")) or (token.startswith("<unused") and token.endswith(">")))


def _read_tokenizer_json(model_dir: Path) -> dict:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        if (model_dir / "tokenizer.model").is_file():
            raise TunelabError(f"{model_dir} has a sentencepiece tokenizer (tokenizer.model) and no tokenizer.json",
                               where="GGUF export", hint="only byte-level BPE tokenizers (tokenizer.json) are exported")
        raise TunelabError(f"{model_dir} has no tokenizer.json", where="GGUF export",
                           hint="export a folder written by `tunelab merge` (it saves the tokenizer)")
    return json.loads(path.read_text(encoding="utf-8"))


def _is_byte_level_bpe(tj: dict) -> bool:
    return (tj.get("model") or {}).get("type") == "BPE" and '"ByteLevel"' in json.dumps(tj.get("pre_tokenizer"))


def pre_tokenizer_name(tok, tj: dict) -> str:
    """tokenizer.ggml.pre for this tokenizer: by probe hash, else "gpt-2" for plain GPT-2 ByteLevel, else
    by the split regex it states (SPLIT_PRE)."""
    chkhsh = sha256(str(tok.encode(CHKTXT)).encode()).hexdigest()
    if chkhsh in KNOWN_PRE:
        return KNOWN_PRE[chkhsh]
    pre = tj.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", False):
        return "gpt-2"
    parts = pre.get("pretokenizers") or []
    if (pre.get("type") == "Sequence" and len(parts) == 2 and parts[0].get("type") == "Split"
            and parts[0].get("behavior") == "Isolated" and not parts[0].get("invert")
            and parts[1].get("type") == "ByteLevel" and not parts[1].get("use_regex", True)
            and not parts[1].get("add_prefix_space", False)):
        name = SPLIT_PRE.get((parts[0].get("pattern") or {}).get("Regex"))
        if name is not None:
            return name
    raise TunelabError(f"unrecognised BPE pre-tokenizer (probe hash {chkhsh[:16]})", where="GGUF export",
                       hint="llama.cpp needs a known tokenizer.ggml.pre; this tokenizer is not one tunelab can name")


def _tokens(tok, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token texts and types by id, as get_vocab_base does: added tokens that are not normalized are
    spelled as the tokenizer decodes them, special (or special-looking) ones are CONTROL."""
    reverse = {i: t for t, i in tok.get_vocab().items()}
    if reverse and max(reverse) >= vocab_size:
        raise TunelabError(f"tokenizer has id {max(reverse)} but the model's vocab_size is {vocab_size}",
                           where="GGUF export")
    added = tok.get_added_vocab()
    decoder = tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        token = reverse[i]
        if token in added:
            if not decoder[i].normalized:
                token = tok.decode(tok.encode(token, add_special_tokens=False))
            if decoder[i].special or _looks_special(token):
                types.append(CONTROL)
            else:
                token = token.replace("\u2581", " ")  # pre-normalized user-defined spaces (llama.cpp does the same)
                types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(token)
    return tokens, types


def _merges(tj: dict) -> list[str]:
    """BPE merges as "a b" lines, in rank order. tokenizers >= 0.20 writes each merge as a pair, whose
    parts may contain spaces: those are written as chr(32 + 256) = U+0120, the byte-level spelling of
    a space (what gguf-py's SpecialVocab does; done here because gguf < 0.11 only knows "a b")."""
    out = []
    for m in (tj.get("model") or {}).get("merges") or []:
        if isinstance(m, str):
            out.append(m)
        else:
            out.append(" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in m))
    return out


def _adds_special(tok) -> tuple[bool, bool]:
    """(add_bos, add_eos): what encoding a text does, observed rather than read from a config flag."""
    with_special = tok("a")["input_ids"]
    plain = tok("a", add_special_tokens=False)["input_ids"]
    bos, eos = tok.bos_token_id, tok.eos_token_id
    add_bos = bos is not None and len(with_special) > len(plain) and with_special[0] == bos
    add_eos = eos is not None and len(with_special) > len(plain) and with_special[-1] == eos
    return add_bos, add_eos


def _is_sentencepiece_bpe(tj: dict) -> bool:
    """A sentencepiece vocabulary saved as tokenizer.json (Gemma, Llama 2): BPE over "\u2581"-spaced
    text with byte fallback (<0xNN> tokens), no byte-level alphabet."""
    model = tj.get("model") or {}
    return model.get("type") == "BPE" and bool(model.get("byte_fallback")) and "\u2581" in json.dumps(
        [tj.get("normalizer"), tj.get("pre_tokenizer")], ensure_ascii=False)


def _sentencepiece_tokens(tok, tj: dict, vocab_size: int) -> tuple[list[str], list[float], list[int]]:
    """Token texts, scores and types by id, as _set_vocab_sentencepiece writes them: <unk> UNKNOWN,
    special added tokens CONTROL, other added tokens USER_DEFINED (a run of "\u2581" spelled as the
    spaces llama.cpp matches in raw text), <0xNN> BYTE, the rest NORMAL. Score of id i = -i: llama.cpp
    merges the adjacent pair whose merged token scores highest, i.e. the lowest id, which is the merge
    order of a vocabulary read back from a GGUF (transformers ranks Gemma's merges by position)."""
    reverse = {i: t for t, i in tok.get_vocab().items()}
    if reverse and max(reverse) >= vocab_size:
        raise TunelabError(f"tokenizer has id {max(reverse)} but the model's vocab_size is {vocab_size}",
                           where="GGUF export")
    added = {a["id"]: a for a in tj.get("added_tokens") or []}
    tokens, scores, types = [], [], []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            scores.append(-10000.0)
            types.append(UNUSED)
            continue
        if i == tok.unk_token_id:
            typ = UNKNOWN
        elif i in added and added[i].get("special"):
            typ = CONTROL
        elif i in added:
            typ = USER_DEFINED
            token = " " * len(token) if set(token) == {"\u2581"} else token
        elif len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            typ = BYTE
        else:
            typ = NORMAL
        tokens.append(token)
        scores.append(-float(i))
        types.append(typ)
    return tokens, scores, types


def _add_special(writer, model_dir: Path, tok, vocab_size: int, merges: list[str]) -> dict:
    """Special token ids, add_bos / add_eos, merges and chat template (gguf.SpecialVocab); returns its
    chat template."""
    import gguf

    special = gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=vocab_size)  # chat template (+ its guesses)
    special.merges = merges
    # the ids and flags the loaded tokenizer actually uses win over what SpecialVocab read from configs
    special.special_token_ids = {}
    for typ, tid in (("bos", tok.bos_token_id), ("eos", tok.eos_token_id), ("unk", tok.unk_token_id),
                     ("pad", tok.pad_token_id)):
        if tid is not None:
            special._set_special_token(typ, tid)
    add_bos, add_eos = _adds_special(tok)
    special.add_special_token = {"bos": add_bos, "eos": add_eos}
    template = getattr(tok, "chat_template", None)
    special.chat_template = template if template is not None else special.chat_template
    special.add_to_gguf(writer, quiet=True)
    return special.chat_template


def add_tokenizer(writer, model_dir: Path, vocab_size: int) -> dict:
    """Write the folder's tokenizer into `writer` (a gguf.GGUFWriter); returns a summary
    {"model", "pre", "tokens", "merges", "chat_template"} for logs and tests."""
    from transformers import AutoTokenizer

    tj = _read_tokenizer_json(model_dir)
    if _is_sentencepiece_bpe(tj):
        return _add_sentencepiece(writer, model_dir, tj, vocab_size)
    if not _is_byte_level_bpe(tj):
        kind = (tj.get("model") or {}).get("type")
        raise TunelabError(f"tokenizer is {kind} without byte-level pre-tokenization or byte fallback",
                           where="GGUF export",
                           hint="byte-level BPE (GPT-2 style) and sentencepiece-style BPE tokenizers are exported")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    pre = pre_tokenizer_name(tok, tj)
    tokens, types = _tokens(tok, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    merges = _merges(tj)
    if not merges:
        raise TunelabError("tokenizer.json has no BPE merges", where="GGUF export")
    template = _add_special(writer, model_dir, tok, vocab_size, merges)
    return {"model": "gpt2", "pre": pre, "tokens": len(tokens), "merges": len(merges), "chat_template": template}


def _add_sentencepiece(writer, model_dir: Path, tj: dict, vocab_size: int) -> dict:
    """tokenizer.ggml.model "llama" with tokens, scores and types (_set_vocab_sentencepiece), pre "default",
    add_space_prefix as the tokenizer behaves ("a" -> "\u2581a" or "a"), and the BPE merges too: llama.cpp
    ignores them for "llama", and transformers' GGUF loader takes them as they are instead of rebuilding
    them from the vocabulary, so the reloaded tokenizer is this one."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tokens, scores, types = _sentencepiece_tokens(tok, tj, vocab_size)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(tok.tokenize("a")[:1] == ["\u2581a"])
    merges = _merges(tj)
    template = _add_special(writer, model_dir, tok, vocab_size, merges)
    return {"model": "llama", "pre": "default", "tokens": len(tokens), "merges": len(merges),
            "chat_template": template}
