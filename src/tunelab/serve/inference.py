"""The inference routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.

`DELETE /v1/models/{model}` deletes one of the caller's fine-tuned models (a finished run of its
tenant): the run folder is renamed to a hidden name (gone from /v1/models and from serving at once),
then removed with everything in it (adapter, checkpoints, metrics, report); its adapter is unloaded
from the engine. It is the explicit delete the API's user asked for (the CLI never deletes a saved run
without --overwrite): download or export what you want to keep first. The served base and the embedders
are 403 (permission_error); another tenant's run, an unfinished run or an unknown name is a 404 that
does not tell which. With `--engine vllm` it is a 400: vLLM holds the adapters it was started with.

Thin: each declares its request and response models (serve/protocol/) and calls its serving class,
ServingModels and ServingEmbeddings here, ServingChat and ServingCompletions in serve/chat.py. With
`--engine vllm` (state.upstream) the models are the upstream's and the other three routes are
forwarded to vLLM (serve/vllm.py; serve/routes.py marks them `proxied`).
"""

from __future__ import annotations

import secrets
import shutil
import time

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from tunelab.errors import TunelabError
from tunelab.serve.auth import current_tenant
from tunelab.serve.errors import APIError
from tunelab.serve.chat import ServingChat, ServingCompletions
from tunelab.serve.disconnect import until_gone
from tunelab.serve.embeddings import EMBEDDERS, embed
from tunelab.serve.model_names import base_names, model_not_found
from tunelab.serve.generation import model_pool
from tunelab.serve.protocol.chat import ChatCompletion, ChatRequest
from tunelab.serve.names import check_name
from tunelab.serve.protocol.common import Deleted
from tunelab.serve.protocol.completions import Completion, CompletionRequest
from tunelab.serve.protocol.embeddings import EmbeddingRequest, EmbeddingResponse
from tunelab.serve.protocol.models import Model, ModelList

STARTED = int(time.time())


class ServingModels:
    """The base, the tenant's finished runs (from the model pool, or vLLM's LoRA modules), the embedders."""

    def __init__(self, state):
        self.state = state

    def list(self, tenant: str) -> ModelList:
        state = self.state
        if state.upstream is not None:
            return ModelList(data=state.upstream.models(state, tenant))
        pool = model_pool(state)
        out = [Model(id=state.base, created=STARTED, owned_by="tunelab")]
        out += [Model(id=name, created=created, owned_by=tenant, parent=state.base)
                for name, created in pool.runs(tenant) if name != state.base]
        out += [Model(id=e, created=STARTED, owned_by="tunelab") for e in EMBEDDERS]
        return ModelList(data=out)

    def get(self, tenant: str, model_id: str) -> Model:
        for m in self.list(tenant).data:
            if m.id == model_id:
                return m
        base = self.state.base
        raise model_not_found(model_id, base_names(self.state) + [m.id for m in self.list(tenant).data if m.id != base])

    def delete(self, tenant: str, model_id: str) -> Deleted:
        """Delete `tenant`'s finished run `model_id` (see the module docstring)."""
        from tunelab.serve.adapters import RunInfo

        state = self.state
        if model_id == state.base or model_id in EMBEDDERS:
            raise APIError(403, f"model '{model_id}' is one this server serves to everyone, not a fine-tuned model "
                           "of yours: it cannot be deleted", param="model", code="model_not_deletable")
        if state.upstream is not None:
            raise APIError(400, "deleting a model is not available with --engine vllm (vLLM holds the adapters it "
                           "was started with)", param="model", code="unsupported_engine")
        try:
            check_name(model_id, "model")
        except (APIError, TunelabError):
            raise model_not_found(model_id, []) from None
        root = state.tenant_runs(tenant)
        path = root / model_id
        if not (path / "DONE").is_file() or not (path / "config.yaml").is_file():
            raise model_not_found(model_id, [name for name, _ in model_pool(state).runs(tenant)]
                                  if state.pool is not None else [])
        key = RunInfo(model_id, path, {}, None).key  # the engine's name of its adapter, read before it goes
        gone = root / f".deleted-{model_id}-{secrets.token_hex(4)}"
        path.rename(gone)  # atomic: no listing or request sees half a run
        shutil.rmtree(gone, ignore_errors=True)
        if state.pool is not None:
            state.pool.unload(key)
        return Deleted(id=model_id, object="model", deleted=True)


class ServingEmbeddings:
    def __init__(self, state):
        self.state = state

    async def create(self, body: EmbeddingRequest) -> EmbeddingResponse:
        body.refuse_unknown()
        if body.model not in EMBEDDERS:
            raise model_not_found(body.model, EMBEDDERS)
        texts = body.texts()
        return await run_in_threadpool(embed, body.model, texts, body.encoding_format, body.dimensions)


def _state(request: Request):
    return request.app.state.tl


# ---- routes (serve/routes.py mounts them) ------------------------------------------------------------------
async def list_models(request: Request, tenant: str = Depends(current_tenant)) -> ModelList:
    return await run_in_threadpool(ServingModels(_state(request)).list, tenant)


async def get_model(model_id: str, request: Request, tenant: str = Depends(current_tenant)) -> Model:
    return await run_in_threadpool(ServingModels(_state(request)).get, tenant, model_id)


async def delete_model(model_id: str, request: Request, tenant: str = Depends(current_tenant)) -> Deleted:
    return await run_in_threadpool(ServingModels(_state(request)).delete, tenant, model_id)


async def chat_completions(body: ChatRequest, request: Request,
                           tenant: str = Depends(current_tenant)) -> ChatCompletion:  # or an SSE stream
    return await until_gone(request, ServingChat(_state(request)).create(tenant, body))  # stops if the client leaves


async def completions(body: CompletionRequest, request: Request,
                      tenant: str = Depends(current_tenant)) -> Completion:  # or an SSE stream
    return await until_gone(request, ServingCompletions(_state(request)).create(tenant, body))


async def embeddings(body: EmbeddingRequest, request: Request,
                     tenant: str = Depends(current_tenant)) -> EmbeddingResponse:
    return await ServingEmbeddings(_state(request)).create(body)
