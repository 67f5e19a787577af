"""`tunelab serve --engine vllm`: vLLM decodes, tunelab keeps keys, tenants, files and jobs.

    up = Upstream.for_state(state, port=8001)   # the vLLM command line for the base + every servable run
    state.upstream = up                         # create_app(state) then proxies the inference routes

`vllm_command(state, port)` is vLLM's OpenAI server for the base with one LoRA module per finished,
servable run of every tenant (serve/adapters.py `open_run` decides, as for tunelab's engine):

    python -m vllm.entrypoints.openai.api_server --model BASE --served-model-name BASE_ID
        --host 127.0.0.1 --port P --enable-lora --lora-modules TENANT/RUN=RUNS/.../RUN/adapter ...
        --max-loras min(runs, --max-adapters) --max-lora-rank max r rounded up to 8|16|32|64|128|256

The routes the registry (serve/routes.py) marks `proxied` (chat/completions, completions,
embeddings) go to `up.url` after tunelab's auth (`router` builds them from the registry);
/v1/models lists the base and the caller's runs among `up.loras` (`Upstream.models`). `model` is the base or one of the caller's runs (another tenant's: 404, nothing sent upstream),
sent as the LoRA module's name; replies carry the client's name. Streams pass through line by line;
an upstream 4xx keeps its status, a 5xx is a 502, no upstream a 503 (OpenAI's error shape). vLLM's
adapters are fixed at its start: a run finished later is a 400 `model_not_loaded` until a restart.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from tunelab.errors import TunelabError
from tunelab.serve.adapters import open_run, refuse
from tunelab.serve.auth import current_tenant
from tunelab.serve.errors import APIError
from tunelab.serve.model_names import base_names, model_not_found
from tunelab.serve.names import check_name
from tunelab.serve.protocol.models import Model
from tunelab.serve.routes import Route
from tunelab.serve.routes import router as registry_router
from tunelab.serve.state import DEFAULT_TENANT

RANKS = (8, 16, 32, 64, 128, 256)  # vLLM's allowed --max-lora-rank values (up to 256 here)
READY_TIMEOUT = 900.0  # s for vLLM to load the base and answer /v1/models
log = logging.getLogger("tunelab.serve")
STARTED = int(time.time())


def lora_name(tenant: str, run: str) -> str:
    """The module's name in vLLM: unique across tenants ('/' is never part of a NAME)."""
    return f"{tenant}/{run}"


def tenants(state) -> list[str]:
    root = state.runs / ".tenants"
    others = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name[:1] != ".") if root.is_dir() else []
    return [DEFAULT_TENANT] + [t for t in others if t != DEFAULT_TENANT]


def servable_runs(state) -> dict[str, Path]:
    """{lora_name: adapter folder} of every finished run that tunelab would serve as an adapter."""
    out = {}
    for tenant in tenants(state):
        root = state.tenant_runs(tenant)
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            if d.name.startswith(".") or not (d / "DONE").is_file() or not (d / "config.yaml").is_file():
                continue
            try:
                run = open_run(d.name, d, state.base)
            except (APIError, TunelabError) as e:
                log.info("not served by vLLM: %s/%s: %s", tenant, d.name, getattr(e, "message", e))
                continue
            out[lora_name(tenant, d.name)] = run.adapter_dir.resolve()
    return out


def adapter_rank(adapter_dir: Path) -> int:
    """The largest rank of an adapter: `r` and its rank_pattern's values (adapter_config.json read and
    checked by the one adapter reader, adapters/peft_files.py)."""
    from tunelab.adapters.peft_files import read_adapter_config

    cfg = read_adapter_config(adapter_dir)
    ranks = [int(cfg.get("r") or 8)] + [int(v) for v in (cfg.get("rank_pattern") or {}).values()]
    return max(ranks)


def round_rank(r: int) -> int:
    if r <= RANKS[-1]:
        return next(a for a in RANKS if r <= a)
    raise TunelabError(f"a LoRA rank of {r} is over vLLM's largest --max-lora-rank ({RANKS[-1]})",
                       where="serve --engine vllm", hint="serve that run with --engine tunelab")


def base_model(state) -> str:
    """What vLLM loads: the folder (or hub id) that the alias or folder --base resolves to."""
    from tunelab.models.registry import resolve

    return str(resolve(state.base, where="--base").path)


def vllm_command(state, port: int, loras: dict[str, Path] | None = None, extra: list[str] = ()) -> list[str]:
    """The command line of vLLM's OpenAI server (module docstring); `extra`: --vllm-arg values."""
    loras = servable_runs(state) if loras is None else loras
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", base_model(state),
           "--served-model-name", state.base, "--host", "127.0.0.1", "--port", str(port)]
    if loras:
        cmd += ["--enable-lora", "--lora-modules", *(f"{n}={p}" for n, p in loras.items()),
                "--max-loras", str(max(1, min(len(loras), state.max_adapters))),
                "--max-lora-rank", str(round_rank(max(adapter_rank(p) for p in loras.values())))]
    return cmd + list(extra)


class Upstream:
    """The vLLM server: its url, the LoRA modules it serves, and (with `command`) its process,
    started and stopped with the app (serve/app.py lifespan). Without a command, an existing
    server at `url` is used (tests point it at a scripted one)."""

    def __init__(self, url: str, loras: dict[str, Path] | None = None, command: list[str] | None = None,
                 ready_timeout: float = READY_TIMEOUT):
        self.url, self.loras, self.command = url.rstrip("/"), dict(loras or {}), command
        self.ready_timeout, self.proc = ready_timeout, None

    @classmethod
    def for_state(cls, state, port: int, extra: list[str] = ()) -> Upstream:
        loras = servable_runs(state)
        return cls(f"http://127.0.0.1:{port}", loras, vllm_command(state, port, loras, extra))

    def start(self) -> None:
        """Start vLLM and wait until it answers /v1/models (blocking: run it in a thread)."""
        if self.command is None or self.proc is not None:
            return
        import httpx2 as httpx

        self.proc = subprocess.Popen(self.command)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                raise TunelabError(f"vLLM exited with code {code} while starting", where="serve --engine vllm",
                                   hint="its log is above; pass options with --vllm-arg")
            try:
                if httpx.get(self.url + "/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        self.stop()
        raise TunelabError(f"vLLM did not answer within {self.ready_timeout:.0f} s", where="serve --engine vllm")

    def models(self, state, tenant: str) -> list[Model]:
        """The base and `tenant`'s finished runs among the LoRA modules (GET /v1/models)."""
        out = [Model(id=state.base, created=STARTED, owned_by="tunelab")]
        root = state.tenant_runs(tenant)
        for name in sorted(self.loras):
            t, run = name.split("/", 1)
            if t == tenant and (root / run / "DONE").is_file():
                out.append(Model(id=run, created=int((root / run / "DONE").stat().st_mtime), owned_by=tenant,
                                 parent=state.base))
        return out

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---- the proxied routes ----------------------------------------------------------------------------------------
def _ctx(request: Request):
    state = request.app.state.tl
    return state, state.upstream


def upstream_model(state, up: Upstream, tenant: str, model) -> str:
    """The name vLLM knows `model` by, for `tenant`: 404 for an unknown run (or another tenant's)."""
    if not isinstance(model, str) or not model:
        raise APIError(400, "'model' must be a non-empty string", param="model", code="invalid_type")
    if model == state.base:
        return state.base
    check_name(model, "model")
    path = state.tenant_runs(tenant) / model
    if not (path / "config.yaml").is_file():
        raise model_not_found(model, base_names(state) + [m.id for m in up.models(state, tenant) if m.id != state.base])
    name = lora_name(tenant, model)
    if name in up.loras:
        return name
    if not (path / "DONE").is_file():
        raise refuse(model, "the run has not finished (no DONE marker)")
    open_run(model, path, state.base)  # the 400 of a run that cannot be served, else:
    raise APIError(400, f"model '{model}' finished after vLLM started; vLLM loads adapters when it starts: "
                        "restart `tunelab serve --engine vllm` to serve it", param="model", code="model_not_loaded")


async def _json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise APIError(400, "the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def _renamed(obj, model):
    return {**obj, "model": model} if isinstance(obj, dict) and "model" in obj else obj


def _sse_line(line: str, model) -> str:
    if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
        try:
            return "data: " + json.dumps(_renamed(json.loads(line[5:]), model), ensure_ascii=False)
        except ValueError:
            pass
    return line


def _error_reply(status: int, content: bytes) -> JSONResponse:
    """An upstream error: 4xx with its status, 5xx as 502; its OpenAI-shaped body kept when it has one."""
    status = status if 400 <= status < 500 else 502
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if not (isinstance(body, dict) and isinstance(body.get("error"), dict)):
        msg = content.decode("utf-8", "replace")[:500] or f"HTTP {status}"
        body = APIError(status, f"vLLM: {msg}", code="upstream_error").body()
    return JSONResponse(body, status_code=status)


async def forward(request: Request, tenant: str, path: str):
    import httpx2 as httpx

    state, up = _ctx(request)
    body = await _json_body(request)
    model = body.get("model")
    body["model"] = await run_in_threadpool(upstream_model, state, up, tenant, model)
    client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0))
    try:
        resp = await client.send(client.build_request("POST", up.url + path, json=body), stream=True)
    except httpx.TransportError as e:
        await client.aclose()
        raise APIError(503, f"the vLLM server is unreachable ({type(e).__name__})", code="upstream_unavailable",
                       type="server_error") from None

    async def close():
        await resp.aclose()
        await client.aclose()

    if resp.status_code >= 400 or not body.get("stream"):
        try:
            content = await resp.aread()
        except httpx.TransportError:
            await close()
            raise APIError(503, "the vLLM server closed the connection", code="upstream_unavailable",
                           type="server_error") from None
        await close()
        if resp.status_code >= 400:
            return _error_reply(resp.status_code, content)
        try:
            return JSONResponse(_renamed(json.loads(content), model))
        except ValueError:
            raise APIError(502, "vLLM answered something that is not JSON", code="upstream_error") from None

    async def events():
        try:
            async for line in resp.aiter_lines():
                yield _sse_line(line, model) + "\n"
        except httpx.TransportError:
            err = APIError(503, "the vLLM server closed the stream", code="upstream_unavailable", type="server_error")
            yield f"data: {json.dumps(err.body())}\n\n"
        finally:
            await close()

    return StreamingResponse(events(), media_type="text/event-stream", background=BackgroundTask(close),
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def proxy(route: Route):
    """The endpoint of a proxied route: the body forwarded to vLLM's same path."""
    async def proxied(request: Request, tenant: str = Depends(current_tenant)):
        return await forward(request, tenant, route.path)

    return proxied


def router(modules: list[str]) -> APIRouter:
    """The registry's routes of `modules` (serve/routes.py), the proxied ones forwarded to vLLM."""
    return registry_router(modules, proxy)
