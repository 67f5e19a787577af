"""Other tunelab trainings on this machine (Linux /proc): a shared CPU halves every figure, so
`tunelab train` says once at its start when another one is running.

A training is a process whose command line runs tunelab (`tunelab`, `python -m tunelab`, or the
server's `tunelab.serve.job_worker`) with `train` or `quickstart`. This process, its ancestors and
the other children of an ancestor that is itself a training (the ranks of the same `--nproc` launch)
are not "another" one.
"""

from __future__ import annotations

import os
from pathlib import Path

TRAINING = ("train", "quickstart")


def is_training(argv: list[str]) -> bool:
    """Does this command line (a /proc cmdline split on NULs) run a tunelab training?"""
    for i, tok in enumerate(argv):
        if tok == "tunelab.serve.job_worker":
            return True
        if os.path.basename(tok) == "tunelab" or (tok == "tunelab" and i and argv[i - 1] == "-m"):
            sub = next((a for a in argv[i + 1:] if not a.startswith("-")), None)
            return sub in TRAINING
    return False


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def other_trainings() -> list[tuple[int, str]]:
    """(pid, command line) of the tunelab trainings running here besides this one; [] where /proc is not."""
    if not Path("/proc/self").exists():
        return []
    me, family = os.getpid(), set()
    pid = me
    while pid > 1 and pid not in family:  # this process and its ancestors
        family.add(pid)
        pid = _ppid(pid)
    launchers = {p for p in family - {me} if is_training(_cmdline(p))}  # an --nproc launch: its ranks are ours
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in family:
            continue
        pid = int(entry.name)
        argv = _cmdline(pid)
        if argv and is_training(argv) and _ppid(pid) not in launchers:
            out.append((pid, " ".join(argv)))
    return sorted(out)


def others_note() -> str | None:
    """The one line `tunelab train` prints at its start when another training is running, else None."""
    others = other_trainings()
    if not others:
        return None
    pid, cmd = others[0]
    more = f" and {len(others) - 1} more" if len(others) > 1 else ""
    cmd = cmd if len(cmd) <= 60 else cmd[:57] + "..."
    return (f"note: another tunelab training is running on this machine (pid {pid}: {cmd}){more}; "
            "both share the CPU, so steps and tokens/s will be slower")
