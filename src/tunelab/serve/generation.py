"""What chat completions and completions share: one request on the model worker, and the serving
base class that turns it into one reply or a Server-Sent-Events stream.

Generation runs on the model worker (serve/batcher.py) with every other request in flight; tokens
come back as events and become text through `TextAssembler` (serve/textstream.py), the same code
for streamed and whole replies, so at temperature 0 both give the same text.

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

from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from tunelab.serve.batcher import GenRequest
from tunelab.serve.errors import APIError
from tunelab.serve.protocol.common import Response
from tunelab.serve.protocol.sampling import SamplingRequest, Usage
from tunelab.serve.textstream import TextAssembler


class Generation:
    """One request on the model worker: its events, its text, its counts."""

    def __init__(self, pool, ids: list[int], body: SamplingRequest, budget: int, stops: list[str],
                 key: str | None, template, constraint=None):
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
        self.req = GenRequest(ids, budget, stop_ids, sampler, sink, key, constraint=constraint)
        self.text = TextAssembler(pool.tokenizer, stops, stop_ids)
        self.finish = "stop"
        self.released = False

    def usage(self) -> Usage:
        n = self.text.n_tokens
        return Usage(prompt_tokens=self.n_prompt, completion_tokens=n, total_tokens=self.n_prompt + n)

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


def sse(obj: Response | dict) -> str:
    """One Server-Sent Event: `data: <json>` and a blank line."""
    data = obj.model_dump(mode="json") if isinstance(obj, Response) else obj
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def model_pool(state):
    """The model pool, or a 503 while it loads."""
    if state.pool is None:
        raise APIError(503, "the model is still loading", code="model_loading", type="server_error")
    return state.pool


class ServingGeneration:
    """Budget, adapter, worker, then one reply or an SSE stream; subclasses say how a request becomes
    prompt ids (`prompt`) and how text becomes the reply and its chunks (`reply`, `chunks`)."""

    prefix = ""  # of the reply's id
    prompt_param = "prompt"  # the field a prompt that does not fit is blamed on
    end_of_stream = "data: [DONE]\n\n"  # the stream's last line (the Responses API sends none)

    @staticmethod
    def encode(obj) -> str:
        """One stream object as Server-Sent Events text."""
        return sse(obj)

    def __init__(self, state):
        self.state = state

    @property
    def pool(self):
        return model_pool(self.state)

    def prompt(self, target, body) -> tuple[list[int], list[str]]:
        """(prompt ids, stop strings) of `body` for `target`."""
        raise NotImplementedError

    def template(self, target):
        return self.pool.template

    def constraint(self):
        """What limits the tokens the request may draw (infer/tool_names.py), or None."""
        return None

    def reply(self, head: dict, text: str, finish: str, usage: Usage, citations) -> Response:
        raise NotImplementedError

    def chunks(self, head: dict, gen: Generation, citations):
        """The stream's objects, as an async generator (the usage chunk is added by `generate`)."""
        raise NotImplementedError

    def usage_chunk(self, head: dict, usage: Usage) -> Response:
        raise NotImplementedError

    async def generate(self, tenant: str, body: SamplingRequest, knowledge=None):
        """The reply (a protocol model) or a StreamingResponse. `await knowledge(target)` (chat with a
        knowledge base) retrieves, rewrites the question and returns the citations."""
        state, pool = self.state, self.pool
        want = body.check(state.max_tokens_cap, body.max_tokens_param())
        target = await run_in_threadpool(pool.target, tenant, body.model)
        citations = await knowledge(target) if knowledge is not None else None  # a run may bring its rag prompt
        ids, stops = self.prompt(target, body)
        budget = pool.budget(len(ids), want or state.max_tokens_cap, self.prompt_param)
        template = self.template(target)
        acquiring = asyncio.ensure_future(run_in_threadpool(pool.acquire, target))
        try:  # a request cancelled while it waits (its client left) frees the slot once it is had
            key = await asyncio.shield(acquiring)
        except asyncio.CancelledError:
            acquiring.add_done_callback(lambda f: f.cancelled() or f.exception() or pool.release(f.result()))
            raise
        try:
            gen = Generation(pool, ids, body, budget, stops, key, template, self.constraint())
        except BaseException:
            pool.release(key)
            raise
        head = {"id": self.prefix + secrets.token_hex(12), "created": int(time.time()), "model": body.model}
        if not body.stream:
            text = "".join([p async for p in gen.pieces()])
            return self.reply(head, text, gen.finish, gen.usage(), citations)

        async def events():
            try:
                async for obj in self.chunks(head, gen, citations):
                    yield self.encode(obj)
                if body.include_usage():
                    yield self.encode(self.usage_chunk(head, gen.usage()))
            except APIError as e:
                yield self.encode(e.body())
            finally:
                gen.close()
            if self.end_of_stream:
                yield self.end_of_stream

        # gen.close again after the response: frees the adapter even if the body never started
        return StreamingResponse(events(), media_type="text/event-stream", background=BackgroundTask(gen.close),
                                 headers=SSE_HEADERS)
