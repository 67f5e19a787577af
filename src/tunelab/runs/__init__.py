"""The run directory: layout and writing, what kind of run a folder holds, loading a run's model.

`tunelab.runs.open(path) -> Run` reads a finished run back (runs/run.py); `RunDir` names each part
of a run folder (runs/rundir.py) and is the only place that joins those names.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.runs.rundir import RunDir
from tunelab.runs.run import Run

__all__ = ["Run", "RunDir", "open"]


def open(path: str | Path, tasks=None, command: str | None = None, where: str = "RUN") -> Run:  # noqa: A001
    """The finished run at `path` as a `Run`: a run directory (config.yaml), of one of `tasks`
    (None: any) and finished (DONE); otherwise TunelabError, one line naming the folder and what to do
    (`runs.kinds.require_run`). Its `config` is the RunConfig validated again."""
    from tunelab.runs.kinds import require_run

    run, _ = require_run(path, tasks, command, where)
    return run
