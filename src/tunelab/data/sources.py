"""Read a dataset source into raw records, each tagged with where it came from (file:line).

A source is one of:
  a file       .jsonl (one object a line), .json (a list of objects, or {"data": [...]}),
               .csv / .tsv (header row), .parquet (one record a row)
  a directory  every data file above in it (sorted by path, recursively), concatenated; with
               `text_files=True` (task: pretrain) also every .txt / .md file as one {"text": ...} record
  a hub id     `hf:owner/name`, or `owner/name` that is not an existing path: `datasets.load_dataset`

`where` is `path:line` for line-based files, `path:row N` for Parquet, `path:item N` for JSON lists,
`hf:owner/name[split]:row N` for hub rows, and the file path for a whole text file.
Every problem is a TunelabError naming the file (and line, where there is one), also for what the JSON
parser itself cannot take: nesting deeper than MAX_DEPTH, an integer over Python's int-digit limit,
a string holding a lone surrogate (\\ud800-\\udfff, which no UTF-8 text can carry) and bytes that
are not UTF-8. Any bytes give records or a TunelabError (tests/data/test_sources_fuzz.py).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
TEXT_SUFFIXES = (".txt", ".md")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # fullmatch
MAX_DEPTH = 64  # nesting of JSON lists and objects, in a record and in a server's request body


@dataclass
class Record:
    """One raw row of a dataset and its location, for error messages."""

    data: dict
    where: str  # "path:line"


def is_hub_id(source: str) -> bool:
    """`hf:owner/name` always; `owner/name` only when no such path exists and it has no data-file suffix."""
    if source.startswith("hf:"):
        return True
    return bool(_HUB_ID.fullmatch(source)) and not Path(source).suffix.lower() in (*DATA_SUFFIXES, *TEXT_SUFFIXES)


def json_value_problem(obj, max_depth: int = MAX_DEPTH) -> str | None:
    """Why a parsed JSON value is refused: nesting deeper than `max_depth`, or a string (a key too) with a
    lone surrogate; None when it is fine. Iterative: any depth is walked without recursion."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                return f"a string holds a lone surrogate (\\u{ord(value[e.start]):04x}), which is not text"
        elif isinstance(value, (list, dict)):
            if depth > max_depth:
                return f"nested deeper than {max_depth} levels"
            if isinstance(value, dict):
                stack.extend((k, depth) for k in value)
                stack.extend((v, depth + 1) for v in value.values())
            else:
                stack.extend((v, depth + 1) for v in value)
    return None


def parse_json(text: str | bytes):
    """json.loads, with every way it can fail as a ValueError whose message reads in an error line:
    json.JSONDecodeError as it is (its position), nesting (RecursionError, or deeper than MAX_DEPTH),
    an integer over the int-digit limit, a lone surrogate, bytes that are not UTF-8."""
    import sys

    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"not valid UTF-8 (byte 0x{e.object[e.start]:02x})") from None
    except ValueError as e:
        if "integer string conversion" in str(e) or "Exceeds the limit" in str(e):
            raise ValueError(f"an integer has more than {sys.get_int_max_str_digits()} digits") from None
        raise ValueError(str(e).splitlines()[0] if str(e) else "invalid JSON") from None
    problem = json_value_problem(obj)
    if problem is not None:
        raise ValueError(problem)
    return obj


def read_source(source: str, base: Path | None = None, field: str = "data.train", text_files: bool = False,
                split: str = "train") -> list[Record]:
    """Records of a file, a directory or a hub dataset (see the module docstring)."""
    p = Path(source).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    if not p.exists() and is_hub_id(source):
        return read_hub(source.removeprefix("hf:"), split, field)
    if p.is_dir():
        return read_directory(p, field, text_files)
    return read_records(p, field)


def read_records(path: str | Path, field: str = "data.train") -> list[Record]:
    """Read a .jsonl/.json/.csv/.tsv/.parquet file into records; raises TunelabError on any malformed row."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        if not p.exists():
            raise TunelabError(f"file not found: {p}", where=field, hint="check the path (relative to where you run tunelab)")
        raise TunelabError(f"unsupported file type '{suffix or p.name}'", where=f"{field}: {p}",
                           hint="use .jsonl, .json, .csv, .tsv or .parquet (or a directory of them)")
    if suffix == ".parquet":
        records = _read_parquet(p, field)
    else:
        text = _read_text(p, field)
        if suffix == ".jsonl":
            records = _read_jsonl(p, text)
        elif suffix == ".json":
            records = _read_json(p, text)
        else:
            records = _read_csv(p, text, delimiter="\t" if suffix == ".tsv" else ",")
    if not records:
        raise TunelabError("the dataset is empty", where=f"{field}: {p}", hint="add at least one example")
    return records


def read_directory(d: Path, field: str, text_files: bool) -> list[Record]:
    """Concatenate the data files of a directory (sorted paths); text files too when `text_files`."""
    wanted = DATA_SUFFIXES + (TEXT_SUFFIXES if text_files else ())
    files = sorted(f for f in d.rglob("*") if f.is_file() and f.suffix.lower() in wanted and not f.name.startswith("."))
    if not files:
        kinds = "text (.txt, .md) or data" if text_files else "data"
        raise TunelabError(f"no {kinds} files in directory {d}", where=field,
                           hint=f"put {', '.join(wanted)} files in it, or point at one file")
    out: list[Record] = []
    for f in files:
        if f.suffix.lower() in TEXT_SUFFIXES:
            text = _read_text(f, field)
            if text.strip():
                out.append(Record({"text": text}, str(f)))
        else:
            out += read_records(f, field)
    if not out:
        raise TunelabError(f"every file in directory {d} is empty", where=field, hint="add text to the files")
    return out


def read_hub(name: str, split: str, field: str) -> list[Record]:
    """Rows of a Hugging Face hub dataset (needs the hub, or the datasets cache)."""
    from tunelab.models.hub_check import go_offline_unless_reachable

    go_offline_unless_reachable()  # no network: the cache or one line at once, not a minute of retries
    try:
        import datasets

        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # offline, unknown id, unknown split: the library's errors vary by version
        text = f"{type(e).__name__}: {e}".lower()
        if any(w in text for w in ("offline", "connect", "resolve", "network", "couldn't reach", "timed out")):
            raise TunelabError(f"cannot reach the Hugging Face hub to load dataset '{name}' (offline?)", where=field,
                               hint="download it where the hub is reachable and point data.train at the local "
                                    ".jsonl/.csv/.parquet file instead") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TunelabError(f"cannot load hub dataset '{name}' split '{split}': {first}", where=field,
                           hint="check the id and split, or use a local file") from None
    return [Record(dict(row), f"hf:{name}[{split}]:row {i}") for i, row in enumerate(ds, 1)]


def _read_text(path: Path, field: str) -> str:
    if not path.is_file():
        raise TunelabError(f"file not found: {path}", where=field, hint="check the path (relative to where you run tunelab)")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TunelabError(
            f"not valid UTF-8 (byte 0x{raw[e.start]:02x})", where=f"{path}:{line}", hint="re-save the file as UTF-8"
        ) from None


def _read_jsonl(p: Path, text: str) -> list[Record]:
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = parse_json(line)
        except json.JSONDecodeError as e:
            raise TunelabError(f"invalid JSON ({e.msg} at column {e.colno})", where=f"{p}:{i}",
                               hint="each line must be one JSON object") from None
        except ValueError as e:
            raise TunelabError(f"invalid JSON ({e})", where=f"{p}:{i}",
                               hint="fix the line or remove it") from None
        if not isinstance(obj, dict):
            raise TunelabError(f"expected a JSON object, got {type(obj).__name__}", where=f"{p}:{i}")
        out.append(Record(obj, f"{p}:{i}"))
    return out


def _read_json(p: Path, text: str) -> list[Record]:
    if not text.strip():
        return []
    try:
        obj = parse_json(text)
    except json.JSONDecodeError as e:
        raise TunelabError(f"invalid JSON ({e.msg})", where=f"{p}:{e.lineno}") from None
    except ValueError as e:
        raise TunelabError(f"invalid JSON ({e})", where=str(p), hint="fix the item or remove it") from None
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        obj = obj["data"]
    if not isinstance(obj, list):
        raise TunelabError("expected a JSON list of objects", where=str(p), hint="or use .jsonl, one object a line")
    out = []
    for i, item in enumerate(obj):
        if not isinstance(item, dict):
            raise TunelabError(f"item {i} is a {type(item).__name__}, expected an object", where=str(p))
        out.append(Record(item, f"{p}:item {i}"))
    return out


def _read_csv(p: Path, text: str, delimiter: str) -> list[Record]:
    """Header row + rows; quoted fields may span lines (`where` is the line the row starts on)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return []
    out = []
    start = reader.line_num + 1
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise TunelabError(f"row has {len(row)} fields, the header has {len(header)}", where=f"{p}:{line}",
                                   hint="quote fields that contain the delimiter")
            out.append(Record(dict(zip(header, row)), f"{p}:{line}"))
    except csv.Error as e:
        raise TunelabError(f"malformed CSV ({e})", where=f"{p}:{reader.line_num}", hint="check the quoting") from None
    return out


def _read_parquet(p: Path, field: str) -> list[Record]:
    if not p.is_file():
        raise TunelabError(f"file not found: {p}", where=field, hint="check the path (relative to where you run tunelab)")
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except Exception as e:  # ArrowInvalid and friends: not a Parquet file, truncated, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TunelabError(f"cannot read Parquet ({first})", where=str(p), hint="re-export the file") from None
    return [Record(row, f"{p}:row {i}") for i, row in enumerate(table.to_pylist(), 1)]
