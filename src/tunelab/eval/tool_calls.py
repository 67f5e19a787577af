"""Tool-call scores: the calls a model made against the calls its reference made (OpenAI shapes).

The reference of an example is its last assistant turn: its `tool_calls` (a call was needed) or none (the
model should answer without one: chit-chat, a question answered directly, a reply from a `role: tool` result).
A prediction is the reply's text and the calls read from it (the server's `message.tool_calls`, or
`ToolSyntax.parse` of generated text); a reply that opened a call (`<tool_call>`, the syntax's start) whose
JSON did not parse has no calls and counts as an attempt with invalid JSON.

Per example (1.0 / 0.0; None where it does not apply):
  decision         called a tool exactly when the reference did
  function         the same function names (as a multiset), or rightly none
  call_exact       the same calls with JSON-equal arguments after normalising, or rightly none
  needed_exact     `call_exact` on the examples whose reference calls a tool (the headline figure)
  none_right       no call on the examples whose reference has none
  valid_json       on the examples where the model attempted a call: every call's arguments parse as an object
Arguments are normalised before comparing: a JSON string is parsed, numbers compare as floats (5 == 5.0,
bools stay bools), strings compare with surrounding whitespace stripped, key order is ignored; several calls
compare as a multiset of (name, arguments), so their order is ignored.
`summarize(rows)` gives each metric's mean over the examples it applies to with a bootstrap 95% interval
(eval/bootstrap, seeded), as {"value", "low", "high", "n"}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.eval import bootstrap

DEFAULT_MAX_NEW_TOKENS = 256  # a call with its arguments runs past a run's 64-token report samples
METRICS = ("decision", "function", "call_exact", "needed_exact", "none_right", "valid_json")


@dataclass
class ToolItem:
    """One held-out request: the turns before the reference normalized as training reads them (arguments as
    objects, null content as ""), the same turns as the file wrote them (`request`: OpenAI's shapes, what a
    client sends), the tools offered, the reference's calls ([] when none) and its text."""

    messages: list[dict]
    tools: list[dict]
    expected: list[dict]
    where: str = ""
    reference: str = ""  # the reference's text when it has no call
    request: list[dict] = field(default_factory=list)


def load_tool_items(path: str | Path) -> list[ToolItem]:
    """The examples of a tools file ({"tools": [...], "messages": [... , reference assistant turn]}), each
    checked and normalized by the data layer (data/formats.to_chat: one-line errors naming file:line)."""
    from tunelab.data.formats import to_chat
    from tunelab.data.sources import read_records
    from tunelab.errors import TunelabError

    items = []
    for rec in read_records(path, "--data"):
        msgs = rec.data.get("messages")
        if not isinstance(msgs, list) or not msgs or not isinstance(msgs[-1], dict) or msgs[-1].get("role") != "assistant":
            raise TunelabError("a tools example needs messages ending with the assistant turn to compare against",
                               where=rec.where)
        ex = to_chat(rec)
        last = ex.messages[-1]
        items.append(ToolItem(ex.messages[:-1], ex.tools, list(last.get("tool_calls") or []), rec.where,
                              last.get("content") or "", request=msgs[:-1]))
    if not items:
        raise TunelabError("the file holds no example", where=str(path))
    return items


def is_tools_file(path: str | Path) -> bool:
    """True when the file's first record offers `tools` (a JSON lines file)."""
    try:
        with open(path, encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        rec = json.loads(first)
    except (OSError, ValueError):
        return False
    return isinstance(rec, dict) and bool(rec.get("tools"))


def _normal(value):
    """A JSON value in the form compared: floats for numbers, stripped strings, containers recursively."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items()}
    return value


def arguments_of(call: dict):
    """A call's arguments as a normalised dict; None when they are not a JSON object."""
    fn = call.get("function", call)
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return None
    return _normal(args) if isinstance(args, dict) else None


def _name(call: dict) -> str:
    return str(call.get("function", call).get("name", ""))


def _key(call: dict) -> str:
    return json.dumps([_name(call), arguments_of(call)], sort_keys=True)


def score_example(calls: list[dict], expected: list[dict], attempted: bool | None = None) -> dict:
    """{metric: 1.0 | 0.0 | None} for one example: `calls` made (OpenAI shape), `expected` the reference's;
    `attempted`: the model opened a call (None: it did when `calls` is non-empty)."""
    attempted = bool(calls) if attempted is None else (attempted or bool(calls))
    needed = bool(expected)
    names_ok = sorted(map(_name, calls)) == sorted(map(_name, expected))
    exact = names_ok and sorted(map(_key, calls)) == sorted(map(_key, expected))
    return {
        "decision": float(attempted == needed),
        "function": float(names_ok and attempted == needed),
        "call_exact": float(exact and attempted == needed),
        "needed_exact": float(exact) if needed else None,
        "none_right": float(not attempted) if not needed else None,
        "valid_json": float(bool(calls) and all(arguments_of(c) is not None for c in calls)) if attempted else None,
    }


def score_text(text: str, expected: list[dict], syntax) -> tuple[dict, list[dict], str]:
    """Score a generated reply read with `syntax` (a data.tool_syntax.ToolSyntax): (scores, calls, content)."""
    content, calls = syntax.parse(text)
    return score_example(calls, expected, attempted=syntax.start in text), calls, content


def score_message(content: str | None, tool_calls: list[dict] | None, expected: list[dict],
                  start: str = "<tool_call>") -> dict:
    """Score a chat completion's message: its parsed `tool_calls`, and its content (a call the server could
    not parse stays there as text: an attempt with invalid JSON when it holds `start`)."""
    calls = list(tool_calls or [])
    return score_example(calls, expected, attempted=bool(calls) or start in (content or ""))


def summarize(rows: list[dict]) -> dict:
    """{metric: {"value", "low", "high", "n"}}: each metric's mean over the examples it applies to, with a
    bootstrap 95% interval (a metric that applies to none has value None and n 0)."""
    out = {}
    for m in METRICS:
        values = [r[m] for r in rows if r.get(m) is not None]
        if values:
            out[m] = bootstrap.summary(values)
        else:
            out[m] = {"value": None, "low": None, "high": None, "n": 0}
    return out


# ---- `tunelab eval` on a tools file ----------------------------------------------------------------------------
class _WithTools:
    """A template that renders `tools` into every prompt it builds (Generator.reply_batch renders messages only)."""

    def __init__(self, template, tools: list[dict]):
        self._template, self._tools = template, tools

    def segments(self, messages: list[dict], add_generation_prompt: bool = False, tools: list[dict] | None = None):
        return self._template.segments(messages, add_generation_prompt, tools=tools or self._tools or None)

    def __getattr__(self, name):
        return getattr(self._template, name)


def generate_replies(gen, items: list[ToolItem], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy replies of a `tunelab.infer.generate.Generator` to each item, its tools rendered by the
    generator's template (items that offer the same tools are batched together), a call's name
    spelled from them as the server does (`Generator.tool_names`)."""
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(json.dumps(it.tools, sort_keys=True), []).append(i)
    replies: list[str] = [""] * len(items)
    template = gen.template
    try:
        for idx in groups.values():
            gen.template = _WithTools(template, items[idx[0]].tools)
            gen.tool_names = [t.get("function", t)["name"] for t in items[idx[0]].tools]
            for i, r in zip(idx, gen.reply_batch([items[i].messages for i in idx], max_new_tokens=max_new_tokens,
                                                 batch_size=batch_size)):
                replies[i] = r
    finally:
        gen.template, gen.tool_names = template, None
    return replies


def evaluate_tools(contenders: list, items: list[ToolItem], *, max_new_tokens: int | None = None,
                   batch_size: int = 16, data: str = "", log=None) -> dict:
    """results.json of `tunelab eval` on a tools file: per contender (eval/compare.Contender) its greedy
    replies (at most `max_new_tokens`, default DEFAULT_MAX_NEW_TOKENS, not a run's eval.max_new_tokens),
    read with its template's tool syntax (data/tool_syntax.syntax_for), scored per example and summarized
    with bootstrap intervals; the shape eval/outputs.write_outputs writes."""
    from tunelab.data.tool_syntax import syntax_for

    per_model, syntaxes = {}, {}
    for c in contenders:
        if log:
            log(f"loading {c.label}")
        gen = c.load()
        syntax = syntax_for(gen.template)
        syntaxes[c.label] = syntax.name
        replies = generate_replies(gen, items, max_new_tokens or DEFAULT_MAX_NEW_TOKENS, batch_size)
        rows = []
        for it, reply in zip(items, replies):
            scores, calls, content = score_text(reply, it.expected, syntax)
            rows.append({"reply": reply, "scores": {k: v for k, v in scores.items() if v is not None},
                         "calls": calls, "all": scores})
        per_model[c.label] = rows
    labels = [c.label for c in contenders]
    return {
        "data": str(data), "n_examples": len(items), "metrics": list(METRICS), "task": "tool_calls",
        "n_need_call": sum(bool(it.expected) for it in items),
        "settings": {"max_new_tokens": max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
                     "greedy": True, "tool_syntax": syntaxes,
                     "bootstrap": {"resamples": bootstrap.RESAMPLES, "seed": bootstrap.SEED, "level": 0.95}},
        "models": [{"label": c.label, "source": c.source, "kind": c.kind, "variant": c.variant,
                    "max_new_tokens": max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
                    "metrics": summarize([r["all"] for r in per_model[c.label]])} for c in contenders],
        "examples": [{"where": it.where, "prompt": _render(it.messages),
                      "reference": _render_calls(it.expected) if it.expected else it.reference,
                      "models": {lab: {"reply": per_model[lab][i]["reply"], "scores": per_model[lab][i]["scores"]}
                                 for lab in labels}}
                     for i, it in enumerate(items)],
    }


def _render_calls(calls: list[dict]) -> str:
    """get_weather({"city": "Oslo"}) per call, the arguments as written."""
    out = []
    for c in calls:
        args = c.get("function", c).get("arguments", {})
        out.append(f"{_name(c)}({args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)})")
    return "\n".join(out)


def _render(turns: list[dict]) -> str:
    return "\n".join(f"{t['role']}: " + (t.get("content") or _render_calls(t.get("tool_calls") or [])) for t in turns)
