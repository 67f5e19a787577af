"""What the server writes under its home and TUNELAB_HOME is its own: folders 0700, files 0600.

    private_dir(path)          mkdir -p where every folder it makes is 0700, and `path` itself made 0700
    open_private(path, "wb")   a new file created 0600 (O_CREAT | O_TRUNC), as a binary file object
    write_private(path, data)  the same, written whole

Used for serve.db (and so its -wal / -shm files, which SQLite creates with the database's mode), the
uploads under files/, the knowledge bases' documents (kb-docs/) and the tenants' knowledge-base folders.
The mode is given at creation, not fixed afterwards, so there is no moment when another user could open
the file. A folder that already exists is tightened to 0700 when the server owns it.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str | Path) -> Path:
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made by another thread meanwhile
            pass
    try:
        st = path.stat()
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            path.chmod(DIR_MODE)
    except OSError:  # not ours to change: leave it
        pass
    return path


def open_private(path: str | Path, mode: str = "wb"):
    """A file object on `path`, created (or truncated) with mode 0600; only "wb" and "w" are allowed."""
    if mode not in ("wb", "w"):
        raise ValueError(f"open_private writes new files only, not mode {mode!r}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode through O_CREAT: tighten it
    except OSError:
        pass
    return os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def write_private(path: str | Path, data: bytes) -> Path:
    with open_private(path, "wb") as f:
        f.write(data)
    return Path(path)
