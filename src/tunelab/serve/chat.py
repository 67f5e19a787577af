"""The serving classes of `/v1/chat/completions` and `/v1/completions` (serve/generation.py runs them).

Chat prompts are the target's template (the run's template.json; the base's own chat template)
rendered and tokenized segment by segment as in training; completions are the plain prompt, no
template. A request names the base or one of its tenant's finished runs (`model`).

Tools: the template renders `tools` (unless tool_choice is "none": then no tools and no parsing);
the reply is read by serve/tool_calls.ReplyParser with the template's tool syntax
(data/tool_syntax.syntax_for), the same code for a plain reply and a stream. "required" opens the
reply with a call up to its function's name, a named function with its call up to the arguments: the
model writes the rest; what does not parse comes back as text. Once a call is open, the characters of
its name can only spell one of the request's tools (infer/tool_names.py). A <think> block is split off
as reasoning_content.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from tunelab.rag.ask import cite_or_add_sources, sources_line
from tunelab.serve.embeddings import retrieve
from tunelab.serve.errors import APIError
from tunelab.serve.generation import ServingGeneration
from tunelab.serve.protocol.chat import ChatChoice, ChatCompletion, ChatCompletionChunk, ChatRequest, ChunkChoice
from tunelab.serve.tool_calls import THINK_OPEN, ReplyParser, collect

ARGUMENT_FRAGMENT = 32  # characters of a call's arguments per streamed delta
_MARK = "__tunelab_arguments__"


def forced_prefix(syntax, name: str | None) -> str:
    """The text a reply is opened with to make the model call a tool: "" for none; for any tool ("")
    the call written up to where its name begins (the name constraint then spells one of the tools:
    infer/tool_names.py); else the call of `name` written up to where its arguments begin."""
    if name is None:
        return ""
    text = syntax.format_calls([{"name": name or _MARK, "arguments": {_MARK: 0}}])
    if not name:
        return text[:text.index(_MARK)]
    return text[:text.rindex(_MARK) - 2]  # -2: the '{"' that opens the arguments object


def render_segments(template, conversation: list[dict], tools: list[dict]):
    """The template's prompt segments, the tools rendered when there are any; 400 when it refuses."""
    if not getattr(template, "supports_tools", True) and (
            tools or any(m.get("tool_calls") or m["role"] == "tool" for m in conversation)):
        raise APIError(400, f"the model's template ('{template.name}') has no tool-call format: tools, tool_calls "
                       "and tool messages cannot be rendered (train with data.template: chatml, qwen3, llama3 or "
                       "mistral)", param="tools" if tools else "messages", code="tools_unsupported")
    try:
        if tools:
            return template.segments(conversation, add_generation_prompt=True, tools=tools)
        return template.segments(conversation, add_generation_prompt=True)
    except TypeError as e:
        if tools and "tools" in str(e):
            raise APIError(400, "the model's template cannot render tools", param="tools",
                           code="unsupported_value") from None
        raise
    except Exception as e:  # the chat template refuses the conversation (jinja raise_exception, roles)
        raise APIError(400, f"the model's chat template cannot render these messages: {e}",
                       param="messages", code="invalid_messages") from None
from tunelab.serve.protocol.completions import Completion, CompletionChoice, CompletionRequest


class ServingChat(ServingGeneration):
    prefix = "chatcmpl-"
    prompt_param = "messages"

    def __init__(self, state):
        super().__init__(state)
        self.conversation: list[dict] = []
        self.tools: list[dict] = []  # rendered and parsed for (none with tool_choice "none")
        self.forced: str | None = None  # the function tool_choice makes the model call ("" any)
        self.opening = ""  # the reply's forced opening (forced_prefix)
        self.syntax = None
        self.thinking = False  # the prompt ends with <think>: the reply starts inside it
        self.parallel = True  # parallel_tool_calls: false keeps the first call only

    async def create(self, tenant: str, body: ChatRequest):
        self.pool  # noqa: B018 - 503 while the model loads, before anything else is checked
        self.conversation = body.conversation()
        self.forced = body.forced_tool()
        self.tools = [] if body.tool_choice == "none" else body.tool_specs()
        self.parallel = body.parallel_tool_calls is not False
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
        from tunelab.data.tool_syntax import syntax_for

        template = self.pool.template_of(target)
        segments = render_segments(template, self.conversation, self.tools)
        if self.tools:
            self.syntax = syntax_for(template)
            self.opening = forced_prefix(self.syntax, self.forced)
        if self.opening:
            segments = [*segments, (self.opening, False)]
        self.thinking = "".join(t for t, _ in segments).rstrip().endswith(THINK_OPEN)
        return encode_segments(self.pool.tokenizer, segments)[0], template.stop_strings + body.stops()

    def constraint(self):
        """With tools, the call's function name limited to theirs (infer/tool_names.py), the forced
        opening already read; None without tools."""
        if not self.tools or self.syntax is None:
            return None
        from tunelab.infer.tool_names import ToolNameConstraint

        names = [t["function"]["name"] for t in self.tools]
        constraint = ToolNameConstraint.for_syntax(names, self.syntax, self.pool.token_texts())
        constraint.push(self.opening)
        return constraint

    def parser(self) -> tuple[ReplyParser, list]:
        """The reply's parser, and the events of the forced opening it has read (none: it opens a call)."""
        parser = ReplyParser(self.syntax, self.thinking, self.parallel)
        return parser, parser.push(self.opening) if self.opening else []

    def parsed(self, text: str, finish: str) -> tuple[dict, str]:
        """The whole reply read as a stream would be: {reasoning, content, calls}, and its finish_reason."""
        parser, events = self.parser()
        got = collect(events + parser.push(text) + parser.finish())
        return got, "tool_calls" if got["calls"] else finish

    def reply(self, head, text, finish, usage, citations) -> ChatCompletion:
        got, finish = self.parsed(text, finish)
        text, cited_by = got["content"], None
        if citations is not None:  # knowledge base: as `tunelab rag ask` (rag/ask.py cite_or_add_sources)
            text, _, _, cited_by = cite_or_add_sources(text or "", citations)
        if text is None and not got["calls"]:
            text = ""
        message = {"role": "assistant", "content": text, "tool_calls": got["calls"] or None,
                   "reasoning_content": got["reasoning"]}
        choice = ChatChoice(index=0, message=message, finish_reason=finish)
        return ChatCompletion(**head, choices=[choice], usage=usage, citations=citations, cited_by=cited_by)

    async def chunks(self, head, gen, citations):
        def chunk(delta: dict, finish=None, **more) -> ChatCompletionChunk:
            return ChatCompletionChunk(**head, choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)], **more)

        yield chunk({"role": "assistant", "content": ""}, citations=citations)
        pieces = []
        parser, events = self.parser()
        n_calls = 0

        def deltas(events):
            nonlocal n_calls
            for kind, value in events:
                if kind == "content":
                    pieces.append(value)
                    yield {"content": value}
                elif kind == "reasoning":
                    yield {"reasoning_content": value}
                else:
                    fn = value["function"]
                    yield {"tool_calls": [{"index": n_calls, "id": value["id"], "type": "function",
                                           "function": {"name": fn["name"], "arguments": ""}}]}
                    args = fn["arguments"]
                    for i in range(0, len(args), ARGUMENT_FRAGMENT):
                        yield {"tool_calls": [{"index": n_calls,
                                               "function": {"arguments": args[i:i + ARGUMENT_FRAGMENT]}}]}
                    n_calls += 1

        for delta in deltas(events):
            yield chunk(delta)
        async for piece in gen.pieces():
            for delta in deltas(parser.push(piece)):
                yield chunk(delta)
        for delta in deltas(parser.finish()):
            yield chunk(delta)
        finish = "tool_calls" if parser.calls else gen.finish
        if citations is None:
            yield chunk({}, finish)
            return
        # the streamed text cannot be taken back: out-of-range [n] stay; a Sources line is appended
        text = "".join(pieces)
        cited_by = cite_or_add_sources(text, citations)[3]
        if cited_by == "added":
            yield chunk({"content": ("\n\n" if text.strip() else "") + sources_line(citations)})
        yield chunk({}, finish, cited_by=cited_by)

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
