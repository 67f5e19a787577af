"""The inference routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.

Thin: each declares its request and response models (serve/protocol/) and calls its serving class,
ServingModels and ServingEmbeddings here, ServingChat and ServingCompletions in serve/chat.py. With
`--engine vllm` (state.upstream) the models are the upstream's and the other three routes are
forwarded to vLLM (serve/vllm.py; serve/routes.py marks them `proxied`).
"""

from __future__ import annotations

import time

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from tunelab.serve.auth import current_tenant
from tunelab.serve.chat import ServingChat, ServingCompletions
from tunelab.serve.disconnect import until_gone
from tunelab.serve.embeddings import EMBEDDERS, embed
from tunelab.serve.model_names import base_names, model_not_found
from tunelab.serve.generation import model_pool
from tunelab.serve.protocol.chat import ChatCompletion, ChatRequest
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


async def chat_completions(body: ChatRequest, request: Request,
                           tenant: str = Depends(current_tenant)) -> ChatCompletion:  # or an SSE stream
    return await until_gone(request, ServingChat(_state(request)).create(tenant, body))  # stops if the client leaves


async def completions(body: CompletionRequest, request: Request,
                      tenant: str = Depends(current_tenant)) -> Completion:  # or an SSE stream
    return await until_gone(request, ServingCompletions(_state(request)).create(tenant, body))


async def embeddings(body: EmbeddingRequest, request: Request,
                     tenant: str = Depends(current_tenant)) -> EmbeddingResponse:
    return await ServingEmbeddings(_state(request)).create(body)
