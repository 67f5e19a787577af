"""The inference routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.

A request names the base or one of its tenant's finished runs (`model`). Chat prompts are the
target's template (the run's template.json; the base's own chat template) rendered and tokenized
segment by segment as in training; completions are the plain prompt, no template. Generation runs
on the model worker (serve/batcher.py) with every other request in flight; tokens come back as
events and become text through `TextAssembler` (serve/textstream.py), the same code for streamed
and whole replies, so at temperature 0 both give the same text.

    token budget   = min(max_tokens or state.max_tokens_cap, context - prompt tokens)
    finish_reason  = "stop" (EOS, the template's end of turn, a `stop` string) | "length"
    usage          = prompt_tokens: prompt ids; completion_tokens: tokens drawn (a stop token
                     included); total_tokens: their sum
    defaults       = temperature 1, top_p 1 (OpenAI's); seed: a fixed seed repeats its tokens
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from tunelab.serve.auth import current_tenant
from tunelab.serve.batcher import GenRequest
from tunelab.serve.embeddings import EMBEDDERS, embed, retrieve
from tunelab.serve.errors import APIError, not_found
from tunelab.serve.schemas import ChatRequest, CompletionRequest, EmbeddingRequest
from tunelab.serve.textstream import TextAssembler

router = APIRouter()
STARTED = int(time.time())


def _state(request: Request):
    return request.app.state.tl


def _pool(request: Request):
    pool = _state(request).extra.get("pool")
    if pool is None:
        raise APIError(503, "the model is still loading", code="model_loading", type="server_error")
    return pool


# ---- models --------------------------------------------------------------------------------------------------
def _models(request: Request, tenant: str) -> list[dict]:
    pool = _pool(request)
    base = _state(request).base
    out = [{"id": base, "object": "model", "created": STARTED, "owned_by": "tunelab"}]
    out += [{"id": name, "object": "model", "created": created, "owned_by": tenant, "parent": base}
            for name, created in pool.runs(tenant) if name != base]
    out += [{"id": e, "object": "model", "created": STARTED, "owned_by": "tunelab"} for e in EMBEDDERS]
    return out


@router.get("/v1/models")
async def list_models(request: Request, tenant: str = Depends(current_tenant)):
    return {"object": "list", "data": await run_in_threadpool(_models, request, tenant)}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request, tenant: str = Depends(current_tenant)):
    for m in await run_in_threadpool(_models, request, tenant):
        if m["id"] == model_id:
            return m
    raise not_found("model", model_id, param="model")


# ---- generation ----------------------------------------------------------------------------------------------
class _Generation:
    """One request on the model worker: its events, its text, its counts."""

    def __init__(self, pool, ids: list[int], body, budget: int, stops: list[str], key: str | None,
                 template):
        from tunelab.infer.sampling import Sampler

        self.pool, self.key, self.n_prompt = pool, key, len(ids)
        self.queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        stop_ids = pool.stop_ids(template)

        def sink(ev):
            try:
                loop.call_soon_threadsafe(self.queue.put_nowait, ev)
            except RuntimeError:  # the event loop is gone (shutdown): stop decoding this row
                self.req.cancel()

        temperature = 1.0 if body.temperature is None else body.temperature
        sampler = Sampler(temperature, 1.0 if body.top_p is None else body.top_p, body.seed)
        self.req = GenRequest(ids, budget, stop_ids, sampler, sink, key)
        self.text = TextAssembler(pool.tokenizer, stops, stop_ids)
        self.finish = "stop"
        self.released = False

    def usage(self) -> dict:
        n = self.text.n_tokens
        return {"prompt_tokens": self.n_prompt, "completion_tokens": n, "total_tokens": self.n_prompt + n}

    async def pieces(self):
        """Text pieces as decoded; sets `finish`. Cancels the row and frees the adapter when done."""
        self.pool.submit(self.req)
        try:
            while True:
                kind, value = await self.queue.get()
                if kind == "token":
                    piece = self.text.push(value)
                    if piece:
                        yield piece
                    if self.text.stopped:
                        self.finish = "stop"
                        return
                elif kind == "end":
                    piece = self.text.finish()
                    if piece:
                        yield piece
                    self.finish = "length" if value == "length" else "stop"
                    return
                else:
                    raise APIError(500, f"generation failed: {value}", code="server_error")
        finally:
            self.req.cancel()
            self.close()

    def close(self) -> None:
        if not self.released:
            self.released = True
            self.pool.release(self.key)


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _run(request: Request, tenant: str, body, ids_of, kind: str, knowledge=None):
    """Shared by chat and completions: budget, adapter, worker, then one JSON body or an SSE stream.
    `ids_of(target)` -> (prompt ids, stop strings); `await knowledge(target)` (chat with a knowledge
    base) retrieves, rewrites the question and returns the citations."""
    state, pool = _state(request), _pool(request)
    param = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) is not None else "max_tokens"
    want = body.check(state.max_tokens_cap, param)
    target = await run_in_threadpool(pool.target, tenant, body.model)
    citations = await knowledge(target) if knowledge is not None else None  # a run may bring its rag prompt
    ids, stops = ids_of(target)
    budget = pool.budget(len(ids), want or state.max_tokens_cap, "messages" if kind == "chat" else "prompt")
    template = pool.template_of(target) if kind == "chat" else pool.template
    key = await run_in_threadpool(pool.acquire, target)
    try:
        gen = _Generation(pool, ids, body, budget, stops, key, template)
    except BaseException:
        pool.release(key)
        raise
    ident = ("chatcmpl-" if kind == "chat" else "cmpl-") + secrets.token_hex(12)
    created = int(time.time())
    head = {"id": ident, "created": created, "model": body.model}
    if not body.stream:
        text = "".join([p async for p in gen.pieces()])
        if kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": gen.finish, "logprobs": None}
            out = {**head, "object": "chat.completion", "choices": [choice], "usage": gen.usage()}
        else:
            choice = {"index": 0, "text": text, "finish_reason": gen.finish, "logprobs": None}
            out = {**head, "object": "text_completion", "choices": [choice], "usage": gen.usage()}
        if citations is not None:
            out["citations"] = citations
        return out
    usage = bool(body.stream_options and body.stream_options.include_usage)
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def chunk(delta: dict | str, finish=None) -> dict:
        if kind == "chat":
            c = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            c = {"index": 0, "text": delta, "finish_reason": finish, "logprobs": None}
        return {**head, "object": obj, "choices": [c]}

    async def events():
        try:
            if kind == "chat":
                first = chunk({"role": "assistant", "content": ""})
                if citations is not None:
                    first["citations"] = citations
                yield _sse(first)
            async for piece in gen.pieces():
                yield _sse(chunk({"content": piece} if kind == "chat" else piece))
            yield _sse(chunk({} if kind == "chat" else "", gen.finish))
            if usage:
                yield _sse({**head, "object": obj, "choices": [], "usage": gen.usage()})
        except APIError as e:
            yield _sse(e.body())
        finally:
            gen.close()
        yield "data: [DONE]\n\n"

    # gen.close again after the response: frees the adapter even if the body never started
    return StreamingResponse(events(), media_type="text/event-stream", background=BackgroundTask(gen.close),
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request, tenant: str = Depends(current_tenant)):
    from tunelab.data.tokenize import encode_segments

    pool = _pool(request)
    conv = body.conversation()
    if body.knowledge_base is not None:
        async def with_kb(target):
            run_dir = target.run.path if target.run is not None else None
            message, cites = await run_in_threadpool(retrieve, _state(request), tenant, body.knowledge_base,
                                                     conv[-1]["content"], body.knowledge_base_k or 3, run_dir)
            conv[-1] = message
            return cites
    else:
        with_kb = None

    def ids_of(target):
        template = pool.template_of(target)
        try:
            segments = template.segments(conv, add_generation_prompt=True)
        except Exception as e:  # the chat template refuses the conversation (jinja raise_exception, roles)
            raise APIError(400, f"the model's chat template cannot render these messages: {e}",
                           param="messages", code="invalid_messages") from None
        return encode_segments(pool.tokenizer, segments)[0], template.stop_strings + body.stops()

    return await _run(request, tenant, body, ids_of, "chat", with_kb)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, tenant: str = Depends(current_tenant)):
    pool = _pool(request)
    prompt = body.prompts()

    def ids_of(target):
        if isinstance(prompt, str):
            ids = pool.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        else:
            vocab = pool.engine.w.embed.shape[0]
            if not all(isinstance(i, int) and 0 <= i < vocab for i in prompt):
                raise APIError(400, f"token ids must be integers in [0, {vocab})", param="prompt",
                               code="invalid_value")
            ids = list(prompt)
        return ids, body.stops()

    return await _run(request, tenant, body, ids_of, "completion")


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request, tenant: str = Depends(current_tenant)):
    body.refuse_unknown()
    if body.model not in EMBEDDERS:
        raise not_found("model", body.model, param="model")
    texts = body.texts()
    return await run_in_threadpool(embed, body.model, texts, body.encoding_format, body.dimensions)
