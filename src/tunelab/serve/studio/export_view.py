"""Export buttons: a finished run as one of the export targets the Studio offers (`Target.studio` in
tunelab.export.targets.REGISTRY: gguf, ollama (GGUF + Modelfile), hf (a merged transformers folder)).

    POST /studio/api/runs/NAME/export   {"to": TARGET} -> tunelab.export.export_run into the target's
                                        default folder (RUN/export/<to>-<quant>, replaced if there), then
                                        {"to", "quant", "out", "files": [{"name", "bytes", "url"}], "notes",
                                         + the target's own fields (ollama: "ollama_name")}
    GET  /studio/api/runs/NAME/download/FOLDER/FILE    one file of RUN/export/FOLDER (with the key)

Only one export runs at a time per process (a lock): merging loads the whole model. A run that
cannot be exported (not finished, a classifier, a template Ollama cannot express) is a 400 with
the exporter's own line.
"""

from __future__ import annotations

import threading

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from tunelab.errors import TunelabError
from tunelab.export.targets import studio_targets
from tunelab.serve.auth import current_tenant
from tunelab.serve.errors import APIError, not_found
from tunelab.serve.names import check_name, hide_paths, inside
from tunelab.serve.protocol.common import read_json
from tunelab.serve.protocol.studio import ExportResult
from tunelab.serve.studio.runs_view import run_dir

router = APIRouter()
_lock = threading.Lock()


def export(state, tenant: str, name: str, to: str) -> dict:
    from tunelab.export.bundle import export_run

    offered = [t.name for t in studio_targets()]
    if to not in offered:
        choices = ", ".join(offered[:-1]) + f" or {offered[-1]}" if len(offered) > 1 else offered[0]
        raise APIError(400, f"export target '{to}' is not offered here: use {choices}", param="to")
    path = run_dir(state, tenant, name)
    with _lock:
        try:
            res = export_run(path, to, overwrite=True)
        except TunelabError as e:  # the run by its name, never by its server path
            raise APIError(400, hide_paths(e.one_line().replace(str(path), name), state), param="to",
                           code="export_failed") from None
    folder = res.out.name
    files = [{"name": str(p.relative_to(res.out)), "bytes": n,
              "url": f"/studio/api/runs/{name}/download/{folder}/{p.relative_to(res.out).as_posix()}"}
             for p, n in res.files]
    return {"to": to, "quant": res.quant, "out": f"{name}/export/{folder}", "files": files,
            "notes": [hide_paths(n, state) for n in res.notes],
            **res.details()}


@router.post("/studio/api/runs/{name}/export")
async def export_route(request: Request, name: str, tenant: str = Depends(current_tenant)) -> ExportResult:
    body = await read_json(request)
    to = body.get("to") if isinstance(body, dict) else None
    return await run_in_threadpool(export, request.app.state.tl, tenant, name, to)


@router.get("/studio/api/runs/{name}/download/{folder}/{file:path}")
def download(request: Request, name: str, folder: str, file: str,
             tenant: str = Depends(current_tenant)) -> FileResponse:
    root = run_dir(request.app.state.tl, tenant, name) / "export"
    check_name(folder, "folder")
    parts = [check_name(p, "file") for p in file.split("/")]
    path = inside(root, folder, *parts) if root.exists() else root / folder
    if not path.is_file():
        raise not_found("file", file)
    return FileResponse(path, media_type="application/octet-stream", filename=parts[-1])
