"""`POST /v1/responses`: the Responses API on the chat serving class (serve/chat.py).

The request becomes a ChatRequest (protocol/responses.ResponsesRequest.chat): the same template,
tools, forced tool choice and reply parser (serve/tool_calls.py); the reply's parts become output
items, in this order:

    reasoning      {"type": "reasoning", content: [{"type": "reasoning_text", text}], summary: []}
    message        {"type": "message", role: "assistant", content: [{"type": "output_text", text}]}
                   (present unless the reply is only calls)
    function_call  {"type": "function_call", call_id, name, arguments} per call

status "incomplete" (incomplete_details.reason "max_output_tokens") when the token budget ended the
reply, else "completed". Streamed, the events are those openai-python's `responses.create(stream=True)`
reads, each `event: <type>` with a sequence_number:

    response.created, response.in_progress
    per item: response.output_item.added, then
      reasoning      response.reasoning_text.delta* / .done
      message        response.content_part.added, response.output_text.delta* / .done, response.content_part.done
      function_call  response.function_call_arguments.delta* / .done
    then response.output_item.done; last response.completed (or response.incomplete) with the whole response
"""

from __future__ import annotations

import json
import secrets

from fastapi import Depends, Request

from tunelab.serve.auth import current_tenant
from tunelab.serve.chat import ARGUMENT_FRAGMENT, ServingChat
from tunelab.serve.disconnect import until_gone
from tunelab.serve.errors import APIError
from tunelab.serve.protocol.responses import ResponseEvent, ResponseObject, ResponsesRequest, ResponseUsage


def _item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def reasoning_item(item_id: str, text: str, status: str = "completed") -> dict:
    return {"id": item_id, "type": "reasoning", "summary": [], "status": status,
            "content": [{"type": "reasoning_text", "text": text}] if status == "completed" else []}


def message_item(item_id: str, text: str | None, status: str = "completed") -> dict:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def call_item(item_id: str, call: dict, status: str = "completed") -> dict:
    fn = call["function"]
    return {"id": item_id, "type": "function_call", "call_id": call["id"], "name": fn["name"],
            "arguments": fn["arguments"] if status == "completed" else "", "status": status}


class ServingResponses(ServingChat):
    prefix = "resp_"
    prompt_param = "input"

    def __init__(self, state):
        super().__init__(state)
        self.request: ResponsesRequest | None = None
        self.seq = 0

    async def create(self, tenant: str, body: ResponsesRequest):
        self.pool  # noqa: B018 - 503 while the model loads
        self.request = body
        n, cap = body.max_output_tokens, self.state.max_tokens_cap
        if n is not None and not 1 <= n <= cap:
            raise APIError(400, f"'max_output_tokens' must be between 1 and {cap} (got {n})",
                           param="max_output_tokens", code="invalid_value")
        return await super().create(tenant, body.chat(self.state.base))

    def response(self, head: dict, status: str, output: list[dict], usage=None) -> ResponseObject:
        r = self.request
        choice = r.tool_choice.model_dump() if hasattr(r.tool_choice, "model_dump") else (r.tool_choice or "auto")
        return ResponseObject(
            id=head["id"], created_at=head["created"], model=head["model"], status=status, output=output,
            usage=usage, incomplete_details={"reason": "max_output_tokens"} if status == "incomplete" else None,
            instructions=r.instructions, parallel_tool_calls=r.parallel_tool_calls is not False,
            temperature=r.temperature, top_p=r.top_p, max_output_tokens=r.max_output_tokens, tool_choice=choice,
            tools=[{"type": "function", **t["function"]} for t in r.function_tools()])

    @staticmethod
    def usage_of(usage) -> ResponseUsage:
        return ResponseUsage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
                             total_tokens=usage.total_tokens)

    def reply(self, head, text, finish, usage, citations) -> ResponseObject:
        got, finish = self.parsed(text, finish)
        output = []
        if got["reasoning"] is not None:
            output.append(reasoning_item(_item_id("rs"), got["reasoning"]))
        if got["content"] is not None or not got["calls"]:
            output.append(message_item(_item_id("msg"), got["content"] or ""))
        output += [call_item(_item_id("fc"), c) for c in got["calls"]]
        return self.response(head, "incomplete" if finish == "length" else "completed", output,
                             self.usage_of(usage))

    def event(self, type_: str, **fields) -> ResponseEvent:
        self.seq += 1
        return ResponseEvent(type=type_, sequence_number=self.seq - 1, **fields)

    async def chunks(self, head, gen, citations):
        output: list[dict] = []
        texts: dict[str, list[str]] = {}  # the open item's kind -> its text so far
        yield self.event("response.created", response=self.response(head, "in_progress", []))
        yield self.event("response.in_progress", response=self.response(head, "in_progress", []))

        def close():
            """The events that end the open reasoning or message item."""
            if not texts:
                return
            kind, parts = next(iter(texts.items()))
            texts.clear()
            at, item = len(output) - 1, output[-1]
            text = "".join(parts)
            if kind == "reasoning":
                yield self.event("response.reasoning_text.done", item_id=item["id"], output_index=at,
                                 content_index=0, text=text)
                output[at] = reasoning_item(item["id"], text)
            else:
                part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                yield self.event("response.output_text.done", item_id=item["id"], output_index=at,
                                 content_index=0, text=text, logprobs=[])
                yield self.event("response.content_part.done", item_id=item["id"], output_index=at,
                                 content_index=0, part=part)
                output[at] = message_item(item["id"], text)
            yield self.event("response.output_item.done", output_index=at, item=output[at])

        def open_text(kind: str):
            item = (reasoning_item(_item_id("rs"), "", "in_progress") if kind == "reasoning"
                    else message_item(_item_id("msg"), None, "in_progress"))
            output.append(item)
            texts[kind] = []
            yield self.event("response.output_item.added", output_index=len(output) - 1, item=item)
            if kind == "content":
                yield self.event("response.content_part.added", item_id=item["id"], output_index=len(output) - 1,
                                 content_index=0, part={"type": "output_text", "text": "", "annotations": [],
                                                        "logprobs": []})

        def events(parsed):
            for kind, value in parsed:
                if kind == "call":
                    yield from close()
                    item = call_item(_item_id("fc"), value, "in_progress")
                    output.append(item)
                    at, args = len(output) - 1, value["function"]["arguments"]
                    yield self.event("response.output_item.added", output_index=at, item=item)
                    for i in range(0, len(args), ARGUMENT_FRAGMENT):
                        yield self.event("response.function_call_arguments.delta", item_id=item["id"],
                                         output_index=at, delta=args[i:i + ARGUMENT_FRAGMENT])
                    yield self.event("response.function_call_arguments.done", item_id=item["id"], output_index=at,
                                     name=value["function"]["name"], arguments=args)
                    output[at] = call_item(item["id"], value)
                    yield self.event("response.output_item.done", output_index=at, item=output[at])
                    continue
                if kind not in texts:
                    yield from close()
                    yield from open_text(kind)
                texts[kind].append(value)
                item_id, at = output[-1]["id"], len(output) - 1
                name = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
                extra = {} if kind == "reasoning" else {"logprobs": []}
                yield self.event(name, item_id=item_id, output_index=at, content_index=0, delta=value, **extra)

        parser, first = self.parser()
        for ev in events(first):
            yield ev
        async for piece in gen.pieces():
            for ev in events(parser.push(piece)):
                yield ev
        for ev in events(parser.finish()):
            yield ev
        if "content" not in texts and not parser.calls and not any(o["type"] == "message" for o in output):
            for ev in [*close(), *open_text("content")]:  # an empty reply is an empty message, as when plain
                yield ev
        for ev in close():
            yield ev
        status = "incomplete" if gen.finish == "length" and not parser.calls else "completed"
        yield self.event(f"response.{status}", response=self.response(head, status, output,
                                                                        self.usage_of(gen.usage())))

    def usage_chunk(self, head, usage):
        raise NotImplementedError  # the usage is in response.completed

    @staticmethod
    def encode(obj) -> str:
        """`event: <type>` and its data (an error mid-stream is an `error` event)."""
        data = obj.model_dump(mode="json") if hasattr(obj, "model_dump") else obj
        if "error" in data and "type" not in data:
            data = {"type": "error", **data["error"]}
        return f"event: {data['type']}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

    end_of_stream = ""


# ---- the route (serve/routes.py mounts it with the inference routes) ----------------------------------------
async def create_response(body: ResponsesRequest, request: Request,
                          tenant: str = Depends(current_tenant)) -> ResponseObject:  # or an SSE stream
    state = request.app.state.tl
    if state.upstream is not None:
        raise APIError(400, "/v1/responses is served by tunelab's own engine, not with --engine vllm",
                       code="unsupported_engine")
    return await until_gone(request, ServingResponses(state).create(tenant, body))  # stops if the client leaves
