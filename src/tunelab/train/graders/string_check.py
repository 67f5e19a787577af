"""`string_check`: compare the filled `input` with the filled `reference` (OpenAI's string check grader).

    eq     1 if input == reference
    ne     1 if input != reference
    like   1 if reference occurs in input (contains, case-sensitive)
    ilike  1 if reference.lower() occurs in input.lower() (contains, case-insensitive)

No stripping or normalisation: the strings are compared as filled (OpenAI documents the same).
"""

from __future__ import annotations

from tunelab.errors import TunelabError
from tunelab.train.graders.base import Graded, check_fields, need_str
from tunelab.train.graders.template import GradeFailure, check_template, fill

OPERATIONS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "like": lambda a, b: b in a,
    "ilike": lambda a, b: b.lower() in a.lower(),
}


class StringCheck:
    type = "string_check"
    required = ("type", "name", "input", "reference", "operation")
    optional = ()

    def check(self, g: dict, where: str) -> None:
        check_fields(g, self.required, self.optional, where)
        for key in ("input", "reference"):
            check_template(need_str(g, key, where), f"{where}.{key}")
        if not isinstance(g["operation"], str) or g["operation"] not in OPERATIONS:
            raise TunelabError(f"unknown operation {g['operation']!r}", where=f"{where}.operation",
                               hint=f"one of {', '.join(OPERATIONS)}")

    def grade(self, g: dict, samples, items, ctx) -> list[Graded]:
        op = OPERATIONS[g["operation"]]
        out = []
        for s, item in zip(samples, items):
            try:
                out.append(Graded(float(op(fill(g["input"], s, item), fill(g["reference"], s, item)))))
            except GradeFailure as e:
                out.append(Graded.failed(e.flag, e.detail_key, e.detail))
        return out
