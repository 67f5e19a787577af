"""Studio: the web UI that `tunelab serve` serves at `/` (docs/studio.md).

A client of the server's own API (/v1/files, /v1/fine_tuning/jobs and its SSE events,
/v1/chat/completions, /v1/models) plus small JSON and HTML-fragment routes for what /v1 does not
have (runs and their curves, data inspection, memory estimates, knowledge bases, exports). It
holds no state of its own: every page is rendered from the server's database and folders, so a
refresh, a reconnect or a restart shows the same thing. Registered as an extra module of
serve/app.py (`router`); no build step, no CDN: static files in studio/static/ (VENDORED.md).
"""

from __future__ import annotations

from fastapi import APIRouter

from tunelab.serve.studio import (
    columns_view,
    data_view,
    export_view,
    kb_view,
    pages,
    runs_view,
    train_view,
)

router = APIRouter()
for _mod in (pages, runs_view, data_view, columns_view, train_view, kb_view, export_view):
    router.include_router(_mod.router)
