"""Writing an export folder so that a crash never leaves a half-written one under its name.

    check_out(out, overwrite)   refuse a non-empty `out` unless overwrite
    tmp = staging(out)          an empty sibling `.NAME.tmp-PID` to write into
    publish(tmp, out)           rename tmp to out; a previous out is moved aside first and removed
                                only once the new one is in place
    with staged_file(out, close) as tmp:   one file: written to `.NAME.tmp-PID`, `close()`d, renamed
                                over out; on any failure closed and removed, a previous out kept
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from tunelab.errors import TunelabError


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise TunelabError(f"{out} exists and is not empty", where="--out",
                           hint="choose another folder, or pass --overwrite")


def staging(out: Path) -> Path:
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.replace(tmp, out)


@contextmanager
def staged_file(out: Path, close: Callable[[], None]) -> Iterator[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        yield tmp
        close()
        os.replace(tmp, out)
    except BaseException:
        close()
        tmp.unlink(missing_ok=True)
        raise
