"""The serving classes of `/v1/chat/completions` and `/v1/completions` (serve/generation.py runs them).

Chat prompts are the target's template (the run's template.json; the base's own chat template)
rendered and tokenized segment by segment as in training; completions are the plain prompt, no
template. A request names the base or one of its tenant's finished runs (`model`).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from tunelab.rag.ask import cite_or_add_sources, sources_line
from tunelab.serve.embeddings import retrieve
from tunelab.serve.errors import APIError
from tunelab.serve.generation import ServingGeneration
from tunelab.serve.protocol.chat import ChatChoice, ChatCompletion, ChatCompletionChunk, ChatRequest, ChunkChoice
from tunelab.serve.protocol.completions import Completion, CompletionChoice, CompletionRequest


class ServingChat(ServingGeneration):
    prefix = "chatcmpl-"
    prompt_param = "messages"

    def __init__(self, state):
        super().__init__(state)
        self.conversation: list[dict] = []

    async def create(self, tenant: str, body: ChatRequest):
        self.pool  # noqa: B018 - 503 while the model loads, before anything else is checked
        self.conversation = body.conversation()
        knowledge = None
        if body.knowledge_base is not None:
            async def knowledge(target):
                run_dir = target.run.path if target.run is not None else None
                message, cites = await run_in_threadpool(retrieve, self.state, tenant, body.knowledge_base,
                                                         self.conversation[-1]["content"], body.knowledge_base_k or 3,
                                                         run_dir)
                self.conversation[-1] = message
                return cites
        return await self.generate(tenant, body, knowledge)

    def template(self, target):
        return self.pool.template_of(target)

    def prompt(self, target, body: ChatRequest):
        from tunelab.data.tokenize import encode_segments

        template = self.pool.template_of(target)
        try:
            segments = template.segments(self.conversation, add_generation_prompt=True)
        except Exception as e:  # the chat template refuses the conversation (jinja raise_exception, roles)
            raise APIError(400, f"the model's chat template cannot render these messages: {e}",
                           param="messages", code="invalid_messages") from None
        return encode_segments(self.pool.tokenizer, segments)[0], template.stop_strings + body.stops()

    def reply(self, head, text, finish, usage, citations) -> ChatCompletion:
        cited_by = None
        if citations is not None:  # knowledge base: as `tunelab rag ask` (rag/ask.py cite_or_add_sources)
            text, _, _, cited_by = cite_or_add_sources(text, citations)
        choice = ChatChoice(index=0, message={"role": "assistant", "content": text}, finish_reason=finish)
        return ChatCompletion(**head, choices=[choice], usage=usage, citations=citations, cited_by=cited_by)

    async def chunks(self, head, gen, citations):
        def chunk(delta: dict, finish=None, **more) -> ChatCompletionChunk:
            return ChatCompletionChunk(**head, choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)], **more)

        yield chunk({"role": "assistant", "content": ""}, citations=citations)
        pieces = []
        async for piece in gen.pieces():
            pieces.append(piece)
            yield chunk({"content": piece})
        if citations is None:
            yield chunk({}, gen.finish)
            return
        # the streamed text cannot be taken back: out-of-range [n] stay; a Sources line is appended
        text = "".join(pieces)
        cited_by = cite_or_add_sources(text, citations)[3]
        if cited_by == "added":
            yield chunk({"content": ("\n\n" if text.strip() else "") + sources_line(citations)})
        yield chunk({}, gen.finish, cited_by=cited_by)

    def usage_chunk(self, head, usage) -> ChatCompletionChunk:
        return ChatCompletionChunk(**head, choices=[], usage=usage)


class ServingCompletions(ServingGeneration):
    prefix = "cmpl-"

    def __init__(self, state):
        super().__init__(state)
        self.prompt_of: str | list[int] = ""

    async def create(self, tenant: str, body: CompletionRequest):
        self.pool  # noqa: B018 - 503 while the model loads
        self.prompt_of = body.prompts()
        return await self.generate(tenant, body)

    def prompt(self, target, body: CompletionRequest):
        pool, prompt = self.pool, self.prompt_of
        if isinstance(prompt, str):
            ids = pool.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        else:
            vocab = pool.engine.w.embed.shape[0]
            if not all(isinstance(i, int) and 0 <= i < vocab for i in prompt):
                raise APIError(400, f"token ids must be integers in [0, {vocab})", param="prompt",
                               code="invalid_value")
            ids = list(prompt)
        return ids, body.stops()

    def reply(self, head, text, finish, usage, citations) -> Completion:
        return Completion(**head, choices=[CompletionChoice(index=0, text=text, finish_reason=finish)], usage=usage)

    async def chunks(self, head, gen, citations):
        async for piece in gen.pieces():
            yield Completion(**head, choices=[CompletionChoice(index=0, text=piece)])
        yield Completion(**head, choices=[CompletionChoice(index=0, text="", finish_reason=gen.finish)])

    def usage_chunk(self, head, usage) -> Completion:
        return Completion(**head, choices=[], usage=usage)
