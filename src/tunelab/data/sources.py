"""Read dataset files into raw records, each tagged with where it came from (file:line).

Supported here: JSONL (one object a line), JSON (a list of objects), CSV and TSV (header row).
Every problem is a TunelabError naming the file and line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError


@dataclass
class Record:
    """One raw row of a dataset file and its location, for error messages."""

    data: dict
    where: str  # "path:line"


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


def read_records(path: str | Path, field: str = "data.train") -> list[Record]:
    """Read a .jsonl/.json/.csv/.tsv file into records; raises TunelabError on any malformed row."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv", ".tsv"):
        raise TunelabError(
            f"unsupported file type '{suffix or p.name}'", where=f"{field}: {p}", hint="use .jsonl, .json, .csv or .tsv"
        )
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


def _read_jsonl(p: Path, text: str) -> list[Record]:
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TunelabError(f"invalid JSON ({e.msg} at column {e.colno})", where=f"{p}:{i}",
                               hint="each line must be one JSON object") from None
        if not isinstance(obj, dict):
            raise TunelabError(f"expected a JSON object, got {type(obj).__name__}", where=f"{p}:{i}")
        out.append(Record(obj, f"{p}:{i}"))
    return out


def _read_json(p: Path, text: str) -> list[Record]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise TunelabError(f"invalid JSON ({e.msg})", where=f"{p}:{e.lineno}") from None
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
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    if not rows:
        return []
    header = [h.strip() for h in rows[0]]
    out = []
    for i, row in enumerate(rows[1:], 2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise TunelabError(
                f"row has {len(row)} fields, the header has {len(header)}", where=f"{p}:{i}",
                hint="quote fields that contain the delimiter",
            )
        out.append(Record(dict(zip(header, row)), f"{p}:{i}"))
    return out
