"""Names that come from requests (file names, run names, suffixes, knowledge bases) and become paths.

    NAME  = [A-Za-z0-9][A-Za-z0-9._-]{0,63}, and not containing ".."

so a name is one path component that can never be "..", absolute, hidden or contain a separator;
`inside(root, *names)` also checks that the joined path resolves under `root`; `hide_paths(text, state)`
writes the server's folders in a text for a client as `runs`, `<home>`, `<kb>`.
"""

from __future__ import annotations

import re
from pathlib import Path

from tunelab.serve.errors import APIError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # always fullmatch: `$` lets a trailing newline in


def check_name(value: str, param: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise APIError(400, f"invalid {param} '{value}': use 1-64 letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit", param=param, code="invalid_name")
    return value


def inside(root: Path, *names: str) -> Path:
    """root / names..., refused unless it resolves inside root."""
    path = root.joinpath(*names)
    if not path.resolve().is_relative_to(root.resolve()):
        raise APIError(400, "path outside the server's folders", code="invalid_name")
    return path


def safe_filename(name: str) -> str:
    """An uploaded file's display name reduced to its last component, checked (the bytes are stored
    under the file id, never under this name)."""
    base = Path(str(name).replace("\\", "/")).name
    return check_name(base, "file")


def hide_paths(text: str, state) -> str:
    """`text` (an error, a config value, a report) with the server's own folders as a client may see
    them: the runs folder as `runs`, the server's home as `<home>`, the knowledge bases as `<kb>`
    (longest first, each as given and as resolved)."""
    roots = {}
    for root, shown in ((state.runs, "runs"), (state.home, "<home>"), (getattr(state, "kb", None), "<kb>")):
        if root is None:
            continue
        for form in (str(root), str(Path(root).resolve())):
            if form not in ("", ".", "/"):
                roots[form] = shown
    for form in sorted(roots, key=len, reverse=True):
        text = text.replace(form, roots[form])
    return text
