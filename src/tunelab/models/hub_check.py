"""Fail fast when a hub id cannot be fetched: resolve the hub's host first (2 s at most) instead of
letting huggingface_hub retry for most of a minute and print a raw `[Errno -2] Name or service not
known ... thrown while requesting HEAD https://...` before the error.

    require_hub(repo, where)   the hub's host resolves: return; it does not (or HF_HUB_OFFLINE is set),
                               but the model is in the local HF cache: set HF_HUB_OFFLINE=1 for this
                               process (transformers then reads the cache without asking) and return;
                               else TunelabError, one line
    go_offline_unless_reachable()  hub datasets: the host does not resolve -> HF_HUB_OFFLINE and
                               HF_DATASETS_OFFLINE set, so `datasets` reads its cache or fails at once
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

from tunelab.errors import TunelabError

TIMEOUT_S = 2.0


def hub_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"


def host_resolves(host: str, timeout: float = TIMEOUT_S) -> bool:
    """Does `host` resolve within `timeout` seconds? (getaddrinfo has no timeout: it runs in a daemon thread.)"""
    found: list[bool] = []

    def look() -> None:
        try:
            socket.getaddrinfo(host, 443)
            found.append(True)
        except (OSError, UnicodeError):
            found.append(False)

    t = threading.Thread(target=look, name="tunelab-hub-dns", daemon=True)
    t.start()
    t.join(timeout)
    return bool(found and found[0])


def _offline_env() -> bool:
    return any(os.environ.get(k, "0") not in ("0", "", "false") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def cached(repo: str, repo_type: str = "model") -> bool:
    """Is `repo` in the local Hugging Face cache (its config.json for a model, anything for a dataset)?"""
    try:
        from huggingface_hub import scan_cache_dir, try_to_load_from_cache
    except ImportError:
        return False
    if repo_type == "model":
        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    try:
        return any(r.repo_id == repo and r.repo_type == repo_type for r in scan_cache_dir().repos)
    except Exception:  # no cache folder yet
        return False


def require_hub(repo: str, where: str, repo_type: str = "model", hint: str | None = None) -> None:
    """Return when `repo` can be loaded (the hub's host resolves, or it is cached); else one-line TunelabError."""
    offline = _offline_env()
    if not offline and host_resolves(hub_host()):
        return
    if cached(repo, repo_type):
        os.environ["HF_HUB_OFFLINE"] = "1"  # read the cache without asking the hub
        return
    why = "HF_HUB_OFFLINE is set" if offline else f"{hub_host()} does not resolve: no network?"
    kind = "model" if repo_type == "model" else "dataset"
    raise TunelabError(f"'{repo}' is a Hugging Face Hub {kind} id and the Hub cannot be reached ({why}), "
                       "nor is it in the local cache", where=where,
                       hint=hint or "use an alias (`tunelab models`), a local model folder or a .gguf file, "
                                    "or download it once where the hub is reachable")


def go_offline_unless_reachable() -> None:
    """When the hub's host does not resolve (2 s), set HF_HUB_OFFLINE / HF_DATASETS_OFFLINE for this process."""
    if not _offline_env() and not host_resolves(hub_host()):
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
