"""The models a request may name where the server loads one for it: a job's base (`POST
/v1/fine_tuning/jobs`), the Studio's inspect and memory views (`model=`).

    check_model(state, name) -> str    the served base (`state.base`, as the server was started: a path
                                       made absolute) or an alias of `tunelab models`; else a 404
    model_not_found(name, candidates)  that 404 (code model_not_found), with "did you mean 'X'?" when one
                                       of `candidates` is close (models/registry.close_name, difflib)
    base_names(state)                  [state.base], or [] when the base is a server path (never suggested)
    tokenizer(state, name)             the tokenizer of check_model(name), from a cache keyed by that
                                       identity and bounded (LRU, TOKENIZERS entries)

Never a path, a hub id or anything else: a client cannot make the server read (or download) a folder or
file by naming it, so it cannot probe the server's disk or load another tenant's model. The 404 says
only "No such model" with at most SHOWN characters of the name, whatever the name is (a path, a file
that is not UTF-8, 5,000 characters): it never tells a missing path from a folder that is no model.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from tunelab.serve.errors import APIError, not_found

SHOWN = 64
TOKENIZERS = 4
_tokenizers: OrderedDict[str, object] = OrderedDict()
_lock = threading.Lock()


def shown(name: str) -> str:
    return name if len(name) <= SHOWN else name[:SHOWN] + "..."


def base_names(state) -> list[str]:
    """The served base as a did-you-mean candidate: not when it is a path on the server's disk."""
    base = state.base
    if not isinstance(base, str) or not base or base.startswith(("~", ".")) or Path(base).is_absolute():
        return []
    return [base]


def model_not_found(name: str, candidates, param: str | None = "model") -> APIError:
    """The 404 of an unknown model `name`, suggesting the closest of `candidates` (the caller's own)."""
    from tunelab.models.registry import close_name

    e = not_found("model", shown(name), param)
    close = close_name(name, candidates) if isinstance(name, str) else None
    if close is not None:
        e = APIError(404, f"{e.message}; did you mean '{shown(close)}'?", param=param, code=e.code)
    return e


def check_model(state, name, param: str = "model") -> str:
    """What to load for `name` (the module docstring); APIError 400 for no name, 404 for any other."""
    from tunelab.models.registry import ALIASES

    if not isinstance(name, str) or not name.strip():
        raise APIError(400, f"Missing required parameter: '{param}'", param=param, code="missing_required_parameter")
    if name == state.base:
        p = Path(name).expanduser()
        return str(p.resolve()) if p.exists() else name  # a job's worker runs in its own folder
    if name in ALIASES:
        return name
    raise model_not_found(name, base_names(state) + list(ALIASES), param)


def tokenizer(state, name: str, param: str = "model"):
    """The tokenizer of model `name` (blocking: it may load one)."""
    ident = check_model(state, name, param)
    with _lock:
        tok = _tokenizers.get(ident)
        if tok is not None:
            _tokenizers.move_to_end(ident)
            return tok
        from tunelab.models.load import load_tokenizer
        from tunelab.models.registry import resolve

        tok = _tokenizers[ident] = load_tokenizer(resolve(ident))
        while len(_tokenizers) > TOKENIZERS:
            _tokenizers.popitem(last=False)
        return tok
