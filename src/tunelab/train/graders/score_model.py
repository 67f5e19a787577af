"""`score_model`: an LLM judge. The `input` messages, templates filled, go to `model` through any
OpenAI-compatible chat completions endpoint (GradeContext.client(): the `openai` client; by default
OPENAI_BASE_URL / OPENAI_API_KEY, so a `tunelab serve` is an endpoint as any other), and the score
is read from the reply:

    1. the reply parsed as JSON: its "result" (OpenAI's judge schema), else its "score"
    2. else the last number in the reply text
    the score must lie in `range` (default [0, 1]); the reward is the score as read.

Messages: role user | assistant | system | developer (sent as system, which every compatible server
knows); content a string, or input_text / output_text parts (joined with newlines). Images and audio
are refused when the grader is validated. sampling_params: max_completions_tokens (sent as
max_completion_tokens), temperature, top_p, seed, reasoning_effort (sent only when given).

A reply with a refusal -> model_grader_refusal_error; no score or one outside the range ->
model_grader_parse_error; the endpoint failing -> model_grader_server_error with its message. Each
scores 0. Token usage is reported per model as OpenAI does (prompt, completion, total, cached tokens).
A batch's requests run JUDGE_CONCURRENCY at a time.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

from tunelab.errors import TunelabError
from tunelab.train.graders.base import Graded, check_fields, finite, need_str
from tunelab.train.graders.template import GradeFailure, check_template, fill

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = ("input_text", "output_text")
SAMPLING = {"max_completions_tokens": "max_completion_tokens", "temperature": "temperature", "top_p": "top_p",
            "seed": "seed", "reasoning_effort": "reasoning_effort"}
# each sampling param's check: (test, what it must be)
SAMPLING_CHECKS = {
    "max_completions_tokens": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "temperature": (lambda v: finite(v) is not None and 0 <= v <= 2, "a number in [0, 2]"),
    "top_p": (lambda v: finite(v) is not None and 0 < v <= 1, "a number in (0, 1]"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "reasoning_effort": (lambda v: isinstance(v, str), "a string"),
}
JUDGE_CONCURRENCY = 8  # requests in flight for one batch (a GRPO step's G x P completions)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _parts(content, where: str) -> list:
    """The content as a list of strings / text parts (TunelabError for images, audio, unknown parts)."""
    items = content if isinstance(content, list) else [content]
    for i, p in enumerate(items):
        if isinstance(p, str):
            continue
        kind = p.get("type") if isinstance(p, dict) else None
        if not isinstance(kind, str) or kind not in TEXT_PARTS:
            raise TunelabError(f"content part of type {kind!r} is not supported (text only: a string, "
                               f"{', '.join(TEXT_PARTS)})", where=f"{where}[{i}]")
        extra = sorted(set(p) - {"type", "text"})
        if extra or not isinstance(p.get("text"), str):
            raise TunelabError(f"the {kind} part has exactly 'type' and 'text' (a string)"
                               + (f"; unknown: {', '.join(extra)}" if extra else ""), where=f"{where}[{i}]")
    return items


def read_score(text: str) -> float | None:
    """The score in a judge's reply (see the module docstring), or None."""
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        for key in ("result", "score"):
            if finite(obj.get(key)) is not None:
                return float(obj[key])
    elif finite(obj) is not None:
        return float(obj)
    found = NUMBER.findall(text)
    return float(found[-1]) if found else None


class ScoreModel:
    type = "score_model"
    required = ("type", "name", "model", "input")
    optional = ("range", "sampling_params")

    def check(self, g: dict, where: str) -> None:
        check_fields(g, self.required, self.optional, where)
        need_str(g, "model", where)
        if not isinstance(g["input"], list) or not g["input"]:
            raise TunelabError("input must be a non-empty list of messages", where=f"{where}.input")
        for i, m in enumerate(g["input"]):
            w = f"{where}.input[{i}]"
            if not isinstance(m, dict):
                raise TunelabError("a message is an object {role, content}", where=w)
            extra = sorted(set(m) - {"role", "content", "type"})
            if extra:
                raise TunelabError(f"unknown field(s) {', '.join(extra)} in a message", where=w)
            if not isinstance(m.get("role"), str) or m["role"] not in ROLES or "content" not in m \
                    or m.get("type", "message") != "message":
                raise TunelabError(f"a message needs role ({', '.join(ROLES)}) and content", where=w)
            for p in _parts(m["content"], f"{w}.content"):
                check_template(p if isinstance(p, str) else p["text"], f"{w}.content")
        lo, hi = self.range(g, where)
        sp = g.get("sampling_params")
        if sp is not None:
            if not isinstance(sp, dict):
                raise TunelabError("sampling_params must be an object", where=f"{where}.sampling_params")
            extra = sorted(set(sp) - set(SAMPLING))
            if extra:
                raise TunelabError(f"unknown field(s) {', '.join(extra)} in sampling_params",
                                   where=f"{where}.sampling_params", hint=f"known: {', '.join(SAMPLING)}")
            for k, v in sp.items():
                ok, what = SAMPLING_CHECKS[k]
                if v is not None and not ok(v):
                    raise TunelabError(f"{k} must be {what}", where=f"{where}.sampling_params.{k}")

    @staticmethod
    def range(g: dict, where: str = "grader") -> tuple[float, float]:
        r = g.get("range")
        if r is None:
            return 0.0, 1.0
        if not isinstance(r, list) or len(r) != 2 or any(finite(x) is None for x in r) or r[0] >= r[1]:
            raise TunelabError("range must be two numbers [low, high] with low < high", where=f"{where}.range")
        return float(r[0]), float(r[1])

    def messages(self, g: dict, sample, item) -> list[dict]:
        out = []
        for m in g["input"]:
            texts = [fill(p if isinstance(p, str) else p["text"], sample, item) for p in _parts(m["content"], "")]
            out.append({"role": ROLES[m["role"]], "content": "\n".join(texts)})
        return out

    def grade(self, g: dict, samples, items, ctx) -> list[Graded]:
        if ctx.client is None:
            raise TunelabError("score_model needs an OpenAI-compatible endpoint", where="grader")
        lo, hi = self.range(g)
        params = {SAMPLING[k]: v for k, v in (g.get("sampling_params") or {}).items() if v is not None}
        client = ctx.client()
        if len(samples) <= 1:
            return [self._one(client, g, s, item, lo, hi, params) for s, item in zip(samples, items)]
        with ThreadPoolExecutor(min(JUDGE_CONCURRENCY, len(samples))) as pool:  # the replies in input order
            return list(pool.map(lambda si: self._one(client, g, si[0], si[1], lo, hi, params), zip(samples, items)))

    def _one(self, client, g, sample, item, lo, hi, params) -> Graded:
        import openai

        try:
            messages = self.messages(g, sample, item)
        except GradeFailure as e:
            return Graded.failed(e.flag, e.detail_key, e.detail)
        try:
            reply = client.chat.completions.create(model=g["model"], messages=messages, **params)
        except openai.OpenAIError as e:
            return Graded.failed("model_grader_server_error", "model_grader_server_error_details",
                                 f"{type(e).__name__}: {e}")
        usage = {}
        if reply.usage is not None:
            cached = getattr(reply.usage.prompt_tokens_details, "cached_tokens", 0) or 0
            usage = {g["model"]: {"prompt_tokens": reply.usage.prompt_tokens,
                                  "completion_tokens": reply.usage.completion_tokens,
                                  "total_tokens": reply.usage.total_tokens, "cached_tokens": cached}}
        msg = reply.choices[0].message if reply.choices else None
        if msg is not None and getattr(msg, "refusal", None):
            out = Graded.failed("model_grader_refusal_error")
        else:
            value = read_score(msg.content or "") if msg is not None else None
            if value is None or not lo <= value <= hi:
                out = Graded.failed("model_grader_parse_error")
            else:
                out = Graded(value)
        out.token_usage, out.sampled_model_name = usage, reply.model or g["model"]
        return out
