"""User-facing errors.

Every mistake a user can make (a missing file, a bad JSON line, an unknown key) raises
`TunelabError`. The CLI prints it as one line and exits with code 2; the traceback is shown
only with `--debug`.

    error: data.train: examples/x.jsonl:3: invalid JSON (Expecting ',' delimiter) - fix the line or remove it
"""

from __future__ import annotations


class TunelabError(Exception):
    """A user-facing error: what went wrong, where (file:line and/or field), and how to fix it."""

    exit_code = 2

    def __init__(self, message: str, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = []
        if self.where:
            parts.append(f"{self.where}: ")
        parts.append(self.message)
        if self.hint:
            parts.append(f" - {self.hint}")
        return "".join(parts).replace("\n", " ")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C ended training after saving a checkpoint; `str()` is the line to print (what was saved and
    how to go on). A KeyboardInterrupt, so whatever stops on Ctrl-C stops on it; the CLI exits 130."""

    exit_code = 130
