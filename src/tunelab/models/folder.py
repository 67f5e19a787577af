"""A model folder written whole or not at all.

    with building(out, "tiny random llama\n") as tmp:   # a fresh sibling folder of `out`
        model.save_pretrained(tmp)
    # on leaving the block without an error: tmp/DONE holds the text, `out` is replaced by tmp;
    # on an error: tmp is removed and `out` is left as it was

So nothing half-written looks complete: a reader that finds `out/DONE` finds every file.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def building(out: Path, done_text: str) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success write DONE and rename it to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        yield tmp
        (tmp / "DONE").write_text(done_text)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
