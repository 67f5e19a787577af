"""Template strings in grader fields, filled as OpenAI fills them.

    {{sample.output_text}}        the model's reply
    {{sample.output_json.x.y}}    a field of the reply parsed as JSON (a list index is a number: .0)
    {{item.<field>[.<sub>...]}}   a field of the data row (the grader run's `item`)

Spaces inside the braces are allowed (`{{ item.answer }}`). A string value goes in as is; any other
value (number, bool, list, object) as its JSON text (json.dumps: true, null, {"a": 1}). Text outside
`{{...}}` is kept verbatim.

A variable the item does not have is an `invalid_variable_error`, a sample.output_json path when the
reply is not JSON a `sample_parse_error` (the grade scores 0); a namespace other than sample / item,
or a sample field other than output_text / output_json, is refused when the grader is validated.
"""

from __future__ import annotations

import json
import re

from tunelab.errors import TunelabError
from tunelab.train.graders.base import UNPARSED, Sample

VARIABLE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
SAMPLE_FIELDS = ("output_text", "output_json")


class GradeFailure(Exception):
    """A grade that cannot be computed for this sample/item: its OpenAI error flag (score 0)."""

    def __init__(self, flag: str, detail_key: str | None = None, detail: str | None = None):
        super().__init__(detail or flag)
        self.flag, self.detail_key, self.detail = flag, detail_key, detail


def check_template(text: str, where: str) -> None:
    """TunelabError for a variable outside the sample / item namespaces (see the module docstring)."""
    for m in VARIABLE.finditer(text):
        parts = m.group(1).split(".")
        root = parts[0]
        if root == "sample" and len(parts) >= 2 and parts[1] in SAMPLE_FIELDS:
            if parts[1] == "output_text" and len(parts) > 2:
                raise TunelabError(f"template {m.group(0)}: output_text has no fields", where=where)
            continue
        if root == "item" and len(parts) >= 2 and all(parts[1:]):
            continue
        raise TunelabError(f"unknown template variable {m.group(0)}", where=where,
                           hint="use {{sample.output_text}}, {{sample.output_json.<field>}} or {{item.<field>}}")


def _walk(value, path: list[str], name: str):
    for key in path:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise GradeFailure("invalid_variable_error", None, f"no {name}")
    return value


def lookup(path: str, sample: Sample, item: dict):
    """The value of one variable path (`sample.output_text`, `item.answer`, ...)."""
    parts = path.split(".")
    if parts[0] == "sample" and len(parts) >= 2 and parts[1] == "output_text" and len(parts) == 2:
        return sample.output_text
    if parts[0] == "sample" and len(parts) >= 2 and parts[1] == "output_json":
        if sample.output_json is UNPARSED:
            raise GradeFailure("sample_parse_error", None, "the sample is not JSON")
        return _walk(sample.output_json, parts[2:], path)
    if parts[0] == "item" and len(parts) >= 2:
        return _walk(item if isinstance(item, dict) else {}, parts[1:], path)
    raise GradeFailure("invalid_variable_error", None, f"unknown variable {path}")


def as_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def fill(text: str, sample: Sample, item: dict) -> str:
    """`text` with every {{variable}} replaced (GradeFailure for one that cannot be filled)."""
    return VARIABLE.sub(lambda m: as_text(lookup(m.group(1), sample, item)), text)
