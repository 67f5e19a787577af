"""What kind of run a folder holds, and the one check every command that reads a run makes first.

`require_run(path, tasks, command)`: the folder is a run (config.yaml), of a task the command serves,
and finished (DONE); `run_or_model` for the commands that also take a model name (generate, chat,
synth --teacher); `refuse_run` for the commands that take a model only. Each failure is one line.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.runs.run import Run, read_raw

# ---- what kind of run a folder holds, and which commands read it ---------------------------------------------
GENERATIVE_TASKS = ("sft", "pretrain", "dpo", "grpo")  # causal LMs: generate, chat, merge, rag ask, synth --teacher


USED_BY = {  # task -> how its model is used (the hint when a command gets the wrong kind)
    "sft": "use `tunelab generate {run}` or `tunelab chat {run}`",
    "pretrain": "use `tunelab generate {run}`",
    "dpo": "use `tunelab generate {run}` or `tunelab chat {run}`",
    "grpo": "use `tunelab generate {run}` or `tunelab chat {run}`",
    "classify": "use `tunelab predict {run}`",
    "reward": "a reward model scores text; no tunelab command serves it: load {run}/adapter with peft",
}


RUN_OR_MODEL_HINT = "pass runs/<name>, or a model alias (`tunelab models`), folder or .gguf file"


def _config(path: Path) -> dict:
    return read_raw(path)


def run_task(path: str | Path) -> str | None:
    """The task of the run at `path` (sft, pretrain, dpo, reward, classify: config.yaml's `task`, sft when
    absent), or None when `path` is not a run directory (no config.yaml). Does not check DONE."""
    p = Path(path)
    if not Run(p).config_path.is_file():
        return None
    return str(_config(p).get("task") or "sft")


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeio" or word.startswith("sft") else "a ") + word


def _kinds(tasks) -> str:
    tasks = list(tasks)
    return tasks[0] if len(tasks) == 1 else ", ".join(tasks[:-1]) + " or " + tasks[-1]


def require_run(path: str | Path, tasks=None, command: str | None = None,
                where: str = "RUN") -> tuple[Run, dict]:
    """Open the finished run at `path` for `command`, whose model must come from one of `tasks`.

    Returns (Run, config.yaml as a dict); `Run.config` is the RunConfig validated again (runs/run.py).
    Raises TunelabError, as one line naming the folder, when `path` does not exist, is not a run
    directory (no config.yaml), holds a run of another task (the hint names the
    command that reads it), or is incomplete (no DONE). `tasks=None` accepts any task."""
    p = Path(path)
    for_cmd = f"; {command} needs a finished run" if command else ""
    if not p.exists():
        raise TunelabError(f"no such run directory: {p}", where=where, hint=_runs_hint(p))
    task = run_task(p)
    if task is None:
        raise TunelabError(f"{p} is not a tunelab run directory (no config.yaml){for_cmd}", where=where,
                           hint="pass runs/<name>, a folder written by `tunelab train`")
    if tasks is not None and task not in tasks:
        need = f"{command or 'this'} needs {_a(_kinds(tasks))} run"
        raise TunelabError(f"{p} is {_a(task)} run; {need}", where=where,
                           hint=USED_BY.get(task, "train a run of that task").format(run=p))
    rd = Run(p)
    if not rd.done:
        raise TunelabError(f"run {p} is incomplete (no DONE marker){for_cmd}", where=where,
                           hint="the training did not finish: `tunelab train CONFIG --resume` continues it, "
                                "or train again")
    return rd, rd.raw


def run_or_model(name: str, tasks, command: str, where: str = "RUN") -> tuple[Run, dict] | None:
    """For commands that take a run or a model: the finished run `name` names (checked by `require_run`),
    or None when `name` names a model (an alias, hub id, .gguf file or a folder with config.json).

    Raises TunelabError for a folder that is neither a run nor a model, and for a path that does not
    exist inside an existing folder or under runs/ (e.g. runs/typo: a hub id `org/name` has no local
    parent folder)."""
    p = Path(name).expanduser()
    if p.is_dir():
        if Run(p).config_path.exists():  # (DONE alone says nothing: converted model caches have one too)
            return require_run(p, tasks, command, where)
        if (p / "config.json").exists():
            return None
        raise TunelabError(f"{p} is not a run directory (no config.yaml) nor a model folder (no config.json)",
                           where=where, hint=RUN_OR_MODEL_HINT)
    local = p.parts[:1] == ("runs",) or (p.parent != Path(".") and p.parent.is_dir())
    if not p.exists() and p.suffix != ".gguf" and local:
        raise TunelabError(f"no such run or model: {p}", where=where, hint=_runs_hint(p, RUN_OR_MODEL_HINT))
    return None


def refuse_run(name: str | Path, command: str, where: str = "MODEL") -> None:
    """TunelabError when `name` is a run directory: `command` takes a model (alias, folder, .gguf, hub id),
    and the hint names the run's base model and how to export the trained one."""
    p = Path(name).expanduser()
    task = run_task(p) if p.is_dir() else None
    if task is None:
        return
    base = (_config(p).get("model") or {}).get("name")
    export = f", or export the trained model with `tunelab merge {p} --out DIR`" if task in GENERATIVE_TASKS else ""
    raise TunelabError(f"{p} is {_a(task)} run directory; {command} takes a model", where=where,
                       hint=(f"pass the run's base model ({base})" if base else "pass a model") + export)


def _runs_hint(p: Path, otherwise: str = "pass runs/<name>, a folder written by `tunelab train`") -> str:
    """Name the runs next to a missing path, if there are any; else `otherwise`."""
    parent = p.parent if p.parent.is_dir() else None
    try:
        runs = sorted(d.name for d in parent.iterdir() if Run(d).config_path.is_file()) if parent else []
    except OSError:
        runs = []
    if runs:
        shown = ", ".join(runs[:8]) + (", ..." if len(runs) > 8 else "")
        return f"runs in {parent}: {shown}"
    return otherwise
