"""Nothing outside src/tunelab/runs/ joins the run folder's layout names (docs/design.md, "A run, read back").

Every file of src/tunelab is read with `ast`; a string constant "adapter", "quantized" or "checkpoints" used
in a path join (the `/` operator, `os.path.join(...)`, `Path(...)` / `PurePath(...)`, `.joinpath(...)`) outside
runs/ fails the test with its file and line: those parts of a run are `RunDir` / `Run` accessors
(runs/rundir.py, runs/run.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tunelab"
LAYOUT = {"adapter", "quantized", "checkpoints"}
JOINERS = {"join", "joinpath", "Path", "PurePath", "PosixPath"}


def _layout_const(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in LAYOUT:
        return node.value
    if isinstance(node, ast.IfExp):  # run / ("adapter" if ... else "model")
        return _layout_const(node.body) or _layout_const(node.orelse)
    return None


def _callee(node: ast.Call) -> str | None:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


def layout_joins(source: str, filename: str = "<src>") -> list[tuple[int, str]]:
    """(line, name) of every layout name joined into a path in `source`."""
    out = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            found = [_layout_const(node.left), _layout_const(node.right)]
        elif isinstance(node, ast.Call) and _callee(node) in JOINERS:
            found = [_layout_const(a) for a in node.args]
        else:
            continue
        out += [(node.lineno, name) for name in found if name]
    return out


def test_the_scan_finds_each_kind_of_join():
    src = ('p = run / "adapter"\nq = os.path.join(d, "checkpoints")\nr = Path(d, "quantized")\n'
           's = d.joinpath("adapter")\nt = d / ("adapter" if lora else "model")\nu = {"adapter": 1}\n'
           'v = what == "adapter"\n')
    assert layout_joins(src) == [(1, "adapter"), (2, "checkpoints"), (3, "quantized"), (4, "adapter"), (5, "adapter")]


def test_no_layout_join_outside_runs():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "runs":
            continue
        bad += [f"src/tunelab/{rel.as_posix()}:{line}: joins '{name}'"
                for line, name in layout_joins(path.read_text(encoding="utf-8"), str(path))]
    assert not bad, "layout names joined outside runs/ (use RunDir / Run accessors):\n" + "\n".join(bad)
