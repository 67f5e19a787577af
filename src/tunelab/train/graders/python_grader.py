"""`python`: the user's `def grade(sample, item) -> float` run in a child python (graders/python_child.py).

One child per batch (`python -I`, cwd a fresh temporary folder, env PATH only): the source runs once,
then grade() once per (sample, item), each under `GradeContext.python_timeout_s`; the whole child
under (cases + 1) x that + 5 s. No network, no new processes, no file outside the python installation
(read) and the child's folder (read, write) inside (an audit hook), 4 GiB of address space. `sample` = {"output_text", "output_json" (None when not JSON), "output_tools": [],
"choices": []}; `item` = the data row.

A grade that raises, returns something other than a finite number, or times out scores 0 with
python_grader_runtime_error (and its details); a child that dies or overruns scores its whole batch 0
with python_grader_server_error. Nothing here raises to the caller.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.train.graders.base import Graded, check_fields, need_str

CHILD = Path(__file__).with_name("python_child.py")


class PythonGrader:
    type = "python"
    required = ("type", "name", "source")
    optional = ()
    unsupported = {"image_tag": "the source runs in the local python, not a container image"}

    def check(self, g: dict, where: str) -> None:
        check_fields(g, self.required, self.optional, where, self.unsupported)
        src = need_str(g, "source", where)
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError) as e:  # ValueError: a null byte
            line = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
            raise TunelabError(f"the source does not parse: {getattr(e, 'msg', e)}{line}",
                               where=f"{where}.source") from None
        if not any(isinstance(n, ast.FunctionDef) and n.name == "grade" for n in tree.body):
            raise TunelabError("the source defines no grade(sample, item)", where=f"{where}.source",
                               hint="def grade(sample, item) -> float: ...")

    def grade(self, g: dict, samples, items, ctx) -> list[Graded]:
        n = len(samples)
        if not n:
            return []
        limit = float(ctx.python_timeout_s)
        job = {"source": g["source"], "timeout_s": limit,
               "cases": [[s.as_dict(), item] for s, item in zip(samples, items)]}
        try:
            payload = json.dumps(job, default=str)
        except ValueError as e:
            return [Graded.failed("python_grader_server_error", "python_grader_server_error_type", str(e))
                    for _ in range(n)]
        with tempfile.TemporaryDirectory(prefix="tunelab_grader_") as cwd:
            try:
                done = subprocess.run([sys.executable, "-I", str(CHILD)], input=payload, capture_output=True,
                                      text=True, cwd=cwd, env={"PATH": os.environ.get("PATH", "")},
                                      timeout=(n + 1) * limit + 5)
            except subprocess.TimeoutExpired:
                return [Graded.failed("python_grader_runtime_error", "python_grader_runtime_error_details",
                                      f"the grader ran over {(n + 1) * limit + 5:g} s") for _ in range(n)]
        try:
            results = json.loads(done.stdout)
            assert isinstance(results, list) and len(results) == n
        except (ValueError, AssertionError):
            tail = (done.stderr or "").strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
            return [Graded.failed("python_grader_server_error", "python_grader_server_error_type", tail[0])
                    for _ in range(n)]
        return [Graded(r["score"]) if "score" in r else
                Graded.failed("python_grader_runtime_error", "python_grader_runtime_error_details", r["error"])
                for r in results]
