"""Nothing outside methods/ and config/ branches on a training method's name (docs/design.md, "Methods:
one object per method"): code asks `method_of(cfg)` for the fact it needs instead.

Every comparison in src/tunelab (`==`, `!=`, `in`, `not in`) is read with `ast`; one counts when a side is a
method name as a string constant, or a tuple / list / set of string constants holding one. At most
`ALLOWED` may remain; each is reported as file:line.
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path

from tunelab.config import MethodConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "tunelab"
ALLOWED = 5
NAMES = set(typing.get_args(MethodConfig.model_fields["name"].annotation))
OPS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def _names_in(node: ast.AST) -> set[str]:
    """The method names a comparison side spells out: a str constant, or a tuple/list/set of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value} & NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)} & NAMES
    return set()


def method_name_comparisons(source: str) -> list[tuple[int, str]]:
    """(line, the names) of every comparison against a method-name literal in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare) or not any(isinstance(op, OPS) for op in node.ops):
            continue
        names = set().union(*(_names_in(side) for side in [node.left, *node.comparators]))
        if names:
            found.append((node.lineno, ", ".join(sorted(names))))
    return found


def _outside_methods() -> list[Path]:
    return [p for p in sorted(SRC.rglob("*.py"))
            if p.relative_to(SRC).parts[0] not in ("methods", "config")]


def test_the_checker_sees_each_kind_of_comparison():
    src = ('if m.name == "qlora": pass\nx = name in ("lora", "qlora")\ny = "full" != k\n'
           'z = k not in {"qat", "bitnet"}\nw = k == "adapter"\nv = k in ("nf4", "fp4")\n')
    assert method_name_comparisons(src) == [(1, "qlora"), (2, "lora, qlora"), (3, "full"), (4, "bitnet, qat")]


def test_at_most_five_method_name_comparisons_outside_methods():
    hits = [f"{p.relative_to(SRC.parent.parent)}:{line}: compares with {names}"
            for p in _outside_methods() for line, names in method_name_comparisons(p.read_text(encoding="utf-8"))]
    assert len(hits) <= ALLOWED, (f"{len(hits)} comparisons against a method name outside methods/ and config/ "
                                  f"(at most {ALLOWED}); ask the method object (`method_of(cfg)`):\n" + "\n".join(hits))
