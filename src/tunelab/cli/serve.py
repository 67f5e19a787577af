"""`tunelab serve`: the OpenAI-compatible server; `tunelab serve keys ...`: its API keys.

    tunelab serve [--host 127.0.0.1] [--port 8000] [--base ALIAS|DIR] [--runs DIR]
                  [--max-adapters N] [--no-auth] [--allow-remote]
                  [--engine tunelab|vllm] [--vllm-port PORT+1] [--vllm-arg ARG ...]
    tunelab serve keys create --tenant NAME      prints a new key once (only its sha256 is kept)
    tunelab serve keys list [--json]
    tunelab serve keys revoke ID

The server binds loopback unless `--allow-remote`; a remote bind always needs keys (`--no-auth`
with `--allow-remote` is refused). Keys and the server's data live in $TUNELAB_SERVE_HOME
(default $TUNELAB_HOME/serve). docs/serve.md has the endpoints. `--engine vllm` runs vLLM's OpenAI
server on 127.0.0.1:--vllm-port and forwards the inference routes to it (serve/vllm.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="OpenAI-compatible server: chat, completions, embeddings, files, fine-tuning jobs.",
                  invoke_without_command=True)
keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def is_loopback(host: str) -> bool:
    """The request guard's loopback test (serve/guard.py), imported when asked: the CLI starts without starlette."""
    from tunelab.serve.guard import is_loopback as guard_is_loopback

    return guard_is_loopback(host)


def check_bind(host: str, allow_remote: bool, no_auth: bool) -> None:
    """TunelabError (one line, exit 2) for a non-loopback host without --allow-remote, and for
    --no-auth on a remote bind."""
    from tunelab.errors import TunelabError

    if is_loopback(host):
        return
    if not allow_remote:
        raise TunelabError(f"--host {host} is reachable from other machines", where="serve",
                           hint="pass --allow-remote to bind it (API keys are then required)")
    if no_auth:
        raise TunelabError("--no-auth is refused with --allow-remote: anyone on the network could use the server",
                           where="serve", hint="drop --no-auth and make keys with `tunelab serve keys create`")


def _home() -> Path:
    from tunelab.serve.state import serve_home

    return serve_home()


@app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless --allow-remote)."),
    port: int = typer.Option(8000, "--port"),
    base: str = typer.Option("smollm2-135m-instruct", "--base", help="The base model: alias or folder."),
    runs: Path = typer.Option(Path("runs"), "--runs", help="Folder of the runs served as models."),
    max_adapters: int = typer.Option(4, "--max-adapters", help="LoRA adapters kept in memory (LRU)."),
    max_batch: int = typer.Option(16, "--max-batch", help="Requests decoded together at most."),
    weights: str = typer.Option("auto", "--weights", help="The decode engine's weights: auto (int4 where the base "
                                "is on a 4-bit grid and the CPU does bf16, else its dtype; `tunelab doctor` says "
                                "which) | fp32 (transformers' exact tokens) | bf16 | int4."),
    no_auth: bool = typer.Option(False, "--no-auth", help="No API keys: one tenant ('default'). Loopback only."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a non-loopback --host."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn's log level."),
    engine: str = typer.Option("tunelab", "--engine", help="tunelab (this process decodes) or vllm (GPUs)."),
    vllm_port: int = typer.Option(0, "--vllm-port", help="vLLM's loopback port (default: --port + 1)."),
    vllm_arg: list[str] = typer.Option(None, "--vllm-arg", help="One more argument for vLLM (repeatable)."),
):
    """Serve the base and the finished runs under --runs through an OpenAI-compatible API."""
    if ctx.invoked_subcommand is not None:
        return
    from tunelab.errors import TunelabError

    check_bind(host, allow_remote, no_auth)
    if max_adapters < 1 or max_batch < 1:
        raise TunelabError("--max-adapters and --max-batch must be at least 1", where="serve")
    if not 0 < port < 65536:
        raise TunelabError(f"invalid port {port}", where="--port")
    from tunelab.infer.engine_choice import SERVE_WEIGHTS

    if weights not in SERVE_WEIGHTS:
        raise TunelabError(f"unknown weights '{weights}'", where="--weights", hint=", ".join(SERVE_WEIGHTS))
    if engine not in ("tunelab", "vllm"):
        raise TunelabError(f"unknown engine '{engine}'", where="--engine", hint="use tunelab or vllm")
    if engine == "vllm":
        return _serve_vllm(host, port, base, runs, max_adapters, no_auth, log_level, vllm_port or port + 1,
                           vllm_arg or [])
    import uvicorn

    from tunelab.serve.app import create_app
    from tunelab.serve.model_pool import ModelPool
    from tunelab.serve.state import ServeState

    state = ServeState(home=_home(), runs=runs.resolve(), base=base, auth=not no_auth,
                       max_adapters=max_adapters, max_batch=max_batch, weights=weights)
    pool = ModelPool(state)  # load before binding: a bad --base fails here, as one line
    kind = "int4" if pool.engine.w.blocks[0].qkv.int4 is not None else str(pool.engine.w.dtype).replace("torch.", "")
    typer.echo(f"tunelab serve: {base} ({kind} weights, {pool.engine.device}), runs in {state.runs}, "
               f"{'no auth' if no_auth else 'API keys required'}; http://{host}:{port}/v1, Studio at http://{host}:{port}/")
    try:
        uvicorn.run(create_app(state, pool=pool), host=host, port=port, log_level=log_level,
                    server_header=False)
    finally:
        pool.close()


def _serve_vllm(host, port, base, runs, max_adapters, no_auth, log_level, vllm_port, vllm_args) -> None:
    """`--engine vllm`: vLLM decodes (a subprocess, stopped with the server), tunelab proxies."""
    import importlib.util

    from tunelab.errors import TunelabError

    if importlib.util.find_spec("vllm") is None:
        raise TunelabError("--engine vllm needs vLLM, which is not installed", where="serve",
                           hint="pip install vllm (Linux + CUDA), or use --engine tunelab")
    if not 0 < vllm_port < 65536 or vllm_port == port:
        raise TunelabError(f"invalid port {vllm_port}", where="--vllm-port")
    import uvicorn

    from tunelab.serve.app import create_app
    from tunelab.serve.state import ServeState
    from tunelab.serve.vllm import Upstream

    state = ServeState(home=_home(), runs=runs.resolve(), base=base, auth=not no_auth, max_adapters=max_adapters)
    up = state.upstream = Upstream.for_state(state, vllm_port, vllm_args)
    typer.echo(f"tunelab serve: vLLM ({base}, {len(up.loras)} adapters) on {up.url}, runs in {state.runs}, "
               f"{'no auth' if no_auth else 'API keys required'}; http://{host}:{port}/v1")
    try:
        uvicorn.run(create_app(state), host=host, port=port, log_level=log_level, server_header=False)
    finally:
        up.stop()


@keys_app.command("create")
def keys_create(tenant: str = typer.Option(..., "--tenant", help="Tenant name: its runs, files and jobs.")):
    """Make a key for TENANT and print it (it is shown only this once)."""
    from tunelab.serve.auth import create_key

    kid, key = create_key(_home() / "serve.db", tenant)
    typer.echo(key)
    typer.echo(f"id {kid}, tenant {tenant}: store the key now, it is not shown again", err=True)


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json")):
    """Every key: id, tenant, prefix, created, revoked."""
    from tunelab.serve.auth import list_keys

    rows = list_keys(_home() / "serve.db")
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        typer.echo("no keys (make one with `tunelab serve keys create --tenant NAME`)")
    import time

    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))
        state = "revoked" if r["revoked"] else "active"
        typer.echo(f"{r['id']}  {r['tenant']:<16} {r['prefix']}...  {when}  {state}")


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id (`keys list`).")):
    """Revoke a key: requests with it get 401 from now on."""
    from tunelab.errors import TunelabError
    from tunelab.serve.auth import revoke_key

    if not revoke_key(_home() / "serve.db", key_id):
        raise TunelabError(f"no active key '{key_id}'", where="serve keys revoke",
                           hint="see `tunelab serve keys list`")
    typer.echo(f"revoked {key_id}")
