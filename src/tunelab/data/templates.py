"""Prompt templates: how a conversation becomes text, and which parts of that text are learned.

A template renders a conversation into segments `(text, is_target)`. Training tokenizes each
segment on its own and concatenates the ids, so inference (which tokenizes the same prompt
segments) sees exactly the token ids the model was trained on. Targets are the assistant
replies, each followed by the end-of-turn text; EOS is appended when the template's end of
turn is not the tokenizer's EOS, so the tuned model learns to stop.

Built-ins:
  llama2   <s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {reply} </s>
  mistral  <s>[INST] {system}\\n\\n{user} [/INST]{reply}</s>                              (+ tools)
  gemma    <start_of_turn>user\\n{system}\\n\\n{user}<end_of_turn>\\n<start_of_turn>model\\n{reply}<end_of_turn>\\n
  chatml   <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{user}<|im_end|>\\n
           <|im_start|>assistant\\n{reply}<|im_end|>\\n                                         (+ tools)
  qwen3    chatml + Qwen3's <think> handling                                             (+ tools)
  llama3   <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n(dates){system}<|eot_id|>... (+ tools)
  phi3     <|system|>\\n{system}<|end|>\\n<|user|>\\n{user}<|end|>\\n<|assistant|>\\n{reply}<|end|>\\n
  alpaca   {system}\\n\\n### Instruction:\\n{user}\\n\\n### Response:\\n{reply}<eos>
  qa       Please answer the following question.\\n\\nQ: {user}\\n\\nA: {reply}<eos>
  auto     the model's own chat template (tokenizer.chat_template), split into turns
  custom   data.custom_template = {system, user, assistant, stop} with {content} placeholders

The built-ins marked (+ tools) render through their Jinja (data/chat_jinja.py; qwen3 and llama3 have no
TurnFormat): `tools`, assistant `tool_calls`, `tool` results and `reasoning_content`; the others refuse a
conversation with tools (one line) and get reasoning written inline. Learned spans: a Jinja with `{% generation %}` markers gives them directly; any other
Jinja is split by rendering prefixes (`_prefix_segments`).

`chat_template_jinja(template)` writes any of them as a Jinja chat template that renders the same
text (a run saves it as the tokenizer's `chat_template` beside its weights, for transformers, vLLM
and Ollama).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunelab.data.chat_jinja import BUILTIN_JINJA, GENERATION_TAG, PLAIN_AS_TURNFORMAT, without_generation_tags
from tunelab.data.reasoning import inline_reasoning
from tunelab.data.tools import uses_tools
from tunelab.errors import TunelabError

Segment = tuple[str, bool]  # (text, is_target)


@dataclass
class TurnFormat:
    """Per-role format strings with a {content} slot; `system_in_user` merges the system text into the first user turn."""

    system: str = ""
    user: str = "{content}"
    assistant_prefix: str = ""  # masked text that opens an assistant turn (the generation prompt)
    assistant: str = "{content}"  # learned text
    stop: str = ""  # learned end-of-turn text after the reply
    bos: str = ""  # text before the first turn
    system_in_user: str | None = None  # e.g. "{system}\n\n{user}"
    default_system: str = ""


BUILTIN: dict[str, TurnFormat] = {
    "llama2": TurnFormat(user="<s>[INST] {content} [/INST]", assistant=" {content}", stop=" </s>",
                         system_in_user="<<SYS>>\n{system}\n<</SYS>>\n\n{user}"),
    "mistral": TurnFormat(bos="<s>", user="[INST] {content} [/INST]", stop="</s>", system_in_user="{system}\n\n{user}"),
    "gemma": TurnFormat(bos="<bos>", user="<start_of_turn>user\n{content}<end_of_turn>\n",
                        assistant_prefix="<start_of_turn>model\n", stop="<end_of_turn>\n",
                        system_in_user="{system}\n\n{user}"),
    "chatml": TurnFormat(system="<|im_start|>system\n{content}<|im_end|>\n", user="<|im_start|>user\n{content}<|im_end|>\n",
                         assistant_prefix="<|im_start|>assistant\n", stop="<|im_end|>\n"),
    "phi3": TurnFormat(system="<|system|>\n{content}<|end|>\n", user="<|user|>\n{content}<|end|>\n",
                       assistant_prefix="<|assistant|>\n", stop="<|end|>\n"),
    "alpaca": TurnFormat(system="{content}\n\n", user="### Instruction:\n{content}\n\n", assistant_prefix="### Response:\n",
                         stop="<eos>\n\n",
                         default_system="Below is an instruction that describes a task. "
                                        "Write a response that appropriately completes the request."),
    "qa": TurnFormat(user="Please answer the following question.\n\nQ: {content}\n\n", assistant_prefix="A: ", stop="<eos>\n\n"),
}
NAMES = ["auto", *BUILTIN, *(n for n in BUILTIN_JINJA if n not in BUILTIN), "custom"]


@dataclass
class Template:
    """A resolved template, saved as runs/<name>/template.json and reused by every inference command."""

    name: str
    system: str | None = None
    fmt: TurnFormat | None = None  # built-in/custom
    jinja: str | None = None  # auto: the model's chat template
    eos: str = ""
    bos: str = ""  # the tokenizer's BOS text, given to jinja templates as bos_token
    add_eos: bool = False  # auto only: append EOS after each reply if the template has none
    extra: dict = field(default_factory=dict)

    # ---- rendering -----------------------------------------------------------------------------------------
    def segments(self, messages: list[dict], add_generation_prompt: bool = False,
                 tools: list[dict] | None = None) -> list[Segment]:
        """Render messages (ending with an assistant turn, or with a user/tool turn + add_generation_prompt);
        `tools` in OpenAI's shape. Raises TunelabError when the conversation uses tools and the template has
        no tool convention."""
        msgs = list(messages)
        if self.system is not None and not (msgs and msgs[0]["role"] == "system"):
            msgs.insert(0, {"role": "system", "content": self.system})
        if uses_tools(msgs, tools) and not self.supports_tools:
            raise TunelabError(f"template '{self.name}' has no tool-call format, so tools, tool_calls and tool "
                               "messages cannot be rendered", where="data.template",
                               hint="use a template with tools: chatml, qwen3, llama3, mistral, or auto with a "
                                    "model whose chat template renders tools")
        plain = not uses_tools(msgs, tools) and not any(m.get("reasoning_content") is not None for m in msgs)
        if not (self.jinja is not None and "reasoning_content" in self.jinja):
            msgs = inline_reasoning(msgs)
        if self.jinja is not None and not (plain and self.fmt is not None and self.name in PLAIN_AS_TURNFORMAT):
            return self._jinja_segments(msgs, add_generation_prompt, tools or None)
        return self._format_segments(msgs, add_generation_prompt)

    @property
    def supports_tools(self) -> bool:
        """Built-ins with a Jinja (chat_jinja.py), or a model's Jinja that reads `tools` and `tool_calls`."""
        return self.jinja is not None and "tool_calls" in self.jinja and "tools" in self.jinja.replace("tool_calls", "")

    def _format_segments(self, msgs: list[dict], gen: bool) -> list[Segment]:
        f = self.fmt
        assert f is not None
        stop = f.stop.replace("<eos>", self.eos)
        out: list[Segment] = [(f.bos, False)] if f.bos else []
        system = f.default_system
        if msgs and msgs[0]["role"] == "system":
            system = msgs[0]["content"]
            msgs = msgs[1:]
        if system and f.system_in_user is None:
            out.append((f.system.format(content=system), False))
        first_user = True
        for m in msgs:
            if m["role"] == "user":
                content = m["content"]
                if first_user and system and f.system_in_user is not None:
                    content = f.system_in_user.format(system=system, user=content)
                first_user = False
                out.append((f.user.format(content=content) + f.assistant_prefix, False))
            else:
                out.append((f.assistant.format(content=m["content"]) + stop, True))
        if not gen and msgs and msgs[-1]["role"] == "user":
            raise ValueError("conversation ends with a user turn; pass add_generation_prompt=True")
        return _merge(out)

    def _jinja_segments(self, msgs: list[dict], gen: bool, tools: list[dict] | None) -> list[Segment]:
        """The learned spans: the template's `{% generation %}` blocks where it has them, else `_prefix_segments`."""
        gen = gen and bool(msgs) and msgs[-1]["role"] != "assistant"
        if GENERATION_TAG.search(self.jinja):
            full, spans = render_jinja(self.jinja, msgs, gen, self.bos, self.eos, tools=tools, spans=True)
            out, done = [], 0
            for start, end in spans:
                out += [(full[done:start], False), (full[start:end], True)]
                done = end
            out.append((full[done:], False))
        else:
            out = self._prefix_segments(msgs, gen, tools)
        if self.add_eos and self.eos:
            out = [(t + self.eos if tgt and self.eos not in t else t, tgt) for t, tgt in out]
        return _merge(out)

    def _prefix_segments(self, msgs: list[dict], gen: bool, tools: list[dict] | None) -> list[Segment]:
        """Split the full rendering F at each assistant turn i:

            P_i = render(messages[:i], generation prompt)   must be a prefix of F: F[done:len(P_i)] is masked
            R_i = render(messages[:i+1])[len(P_i):]           the reply as the last turn (less an EOS that the
                                                              template writes only at the end, when F lacks it there)
            learned: F[len(P_i):len(P_i)+k], k = len(R_i) when F continues with R_i, else the longest k with
                     R_i ending in F[len(P_i):len(P_i)+k] (a template that renders a turn differently once later
                     turns follow, like Qwen3's dropping "<think>\n\n</think>\n\n" from earlier turns)
        """
        full = self._render(msgs, gen, tools)
        out: list[Segment] = []
        done = 0
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            prompt = self._render(msgs[:i], True, tools)
            alone = self._render(msgs[: i + 1], False, tools)
            if not full.startswith(prompt) or len(prompt) < done or not alone.startswith(prompt):
                raise TunelabError("the model's chat template is not prefix-stable, so replies cannot be masked",
                                   where="data.template", hint="choose a built-in template, e.g. data.template=chatml")
            reply, tail = alone[len(prompt):], full[len(prompt):]
            if self.eos and reply.endswith(self.eos) and not tail.startswith(reply):
                reply = reply[:-len(self.eos)]  # an EOS the template writes only where the conversation ends (Phi-3)
            k = len(reply) if tail.startswith(reply) else _overlap(reply, tail)
            if k == 0:
                raise TunelabError(f"the model's chat template renders reply {i} differently inside the conversation, "
                                   "so it cannot be masked", where="data.template",
                                   hint="choose a built-in template, e.g. data.template=chatml")
            out += [(full[done:len(prompt)], False), (full[len(prompt):len(prompt) + k], True)]
            done = len(prompt) + k
        out.append((full[done:], False))
        return out

    def _render(self, msgs: list[dict], gen: bool, tools: list[dict] | None = None) -> str:
        return render_jinja(self.jinja, msgs, gen, bos_token=self.bos, eos_token=self.eos, tools=tools)

    def prompt_text(self, messages: list[dict]) -> str:
        return "".join(t for t, _ in self.segments(messages, add_generation_prompt=True))

    @property
    def stop_strings(self) -> list[str]:
        """Text that ends a reply at inference (besides the tokenizer's EOS id)."""
        stops = [self.eos] if self.eos else []
        if self.fmt is not None:
            s = self.fmt.stop.replace("<eos>", self.eos).strip()
            if s and s not in stops:
                stops.append(s)
        elif self.name in BUILTIN_JINJA and BUILTIN_JINJA[self.name].stop not in stops:
            stops.append(BUILTIN_JINJA[self.name].stop)
        return stops

    # ---- persistence ---------------------------------------------------------------------------------------
    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, indent=2, ensure_ascii=False)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Template":
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        fmt = TurnFormat(**d.pop("fmt")) if d.get("fmt") else None
        d.pop("fmt", None)
        return cls(fmt=fmt, **d)


def _overlap(reply: str, tail: str) -> int:
    """The longest k with reply.endswith(tail[:k]) (0 when none)."""
    for k in range(min(len(reply), len(tail)), 0, -1):
        if reply.endswith(tail[:k]):
            return k
    return 0


def _merge(segs: list[Segment]) -> list[Segment]:
    """Join neighbouring segments with the same target flag; drop empty ones."""
    out: list[Segment] = []
    for text, tgt in segs:
        if not text:
            continue
        if out and out[-1][1] == tgt:
            out[-1] = (out[-1][0] + text, tgt)
        else:
            out.append((text, tgt))
    return out


def render_jinja(jinja: str, messages: list[dict], add_generation_prompt: bool, bos_token: str = "",
                 eos_token: str = "", tools: list[dict] | None = None, spans: bool = False, **kwargs):
    """Render as transformers' `apply_chat_template(messages, tools=tools, tokenize=False)` does (its own Jinja
    environment: sandbox, `tojson` without HTML escaping, `{% generation %}`). With `spans`: (text, [(start, end)]
    of each `{% generation %}` block). A `raise_exception` of the template is a TunelabError."""
    import jinja2
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        texts, indices = render_jinja_template([messages], tools=tools, chat_template=jinja,
                                               return_assistant_tokens_mask=spans,
                                               add_generation_prompt=add_generation_prompt, bos_token=bos_token,
                                               eos_token=eos_token, **kwargs)
    except jinja2.exceptions.TemplateError as e:
        raise TunelabError(f"chat template: {e}", where="data.template",
                           hint="the conversation does not fit the template; data.template=chatml renders any") \
            from None
    return (texts[0], indices[0]) if spans else texts[0]


def chat_template_jinja(template: Template) -> str | None:
    """A Jinja chat template (for `tokenizer.chat_template`) that renders like `template`.

    Contract: for a conversation of system/user/assistant turns, `apply_chat_template(messages,
    tokenize=False)` with this template equals `"".join(template.segments(messages))` when the
    conversation ends with an assistant turn, and equals `template.prompt_text(messages)` with
    `add_generation_prompt=True` when it ends with a user turn (a user turn that ends the
    conversation gets the assistant prefix only with add_generation_prompt, as in Hugging Face).

    `auto` templates return the model's own Jinja (with the run's system message put first when
    the conversation has none); built-in and custom formats are translated from their TurnFormat,
    with the tokenizer's EOS text written in where the format says `<eos>`. None when the template
    has neither (nothing to export).
    """
    if template.jinja is not None:
        jinja = without_generation_tags(template.jinja) if template.name in BUILTIN_JINJA else template.jinja
        if template.system is None:
            return jinja
        return ("{% if not (messages and messages[0]['role'] == 'system') %}"
                "{% set messages = [{'role': 'system', 'content': " + _lit(template.system) + "}] + messages %}"
                "{% endif %}" + jinja)
    f = template.fmt
    if f is None:
        return None
    default_system = template.system if template.system is not None else f.default_system
    if f.system_in_user is not None:  # the first user turn carries the system text
        first_user = _fill(f.system_in_user, {"system": "system", "user": "m['content']"})
        content = "(" + first_user + ") if (ns.first_user and system) else m['content']"
        system_turn = ""
    else:
        content = "m['content']"
        system_turn = "{% if system %}{{ " + _fill(f.system, {"content": "system"}) + " }}{% endif %}"
    return (
        "{% set ns = namespace(first_user=true) %}"
        "{% set system = " + _lit(default_system) + " %}"
        "{% if messages and messages[0]['role'] == 'system' %}"
        "{% set system = messages[0]['content'] %}{% set messages = messages[1:] %}{% endif %}"
        + ("{{ " + _lit(f.bos) + " }}" if f.bos else "") + system_turn +
        "{% for m in messages %}"
        "{% if m['role'] == 'user' %}"
        "{% set c = " + content + " %}{% set ns.first_user = false %}"
        "{{ " + _fill(f.user, {"content": "c"}) + " }}"
        "{% if not loop.last or add_generation_prompt %}{{ " + _lit(f.assistant_prefix) + " }}{% endif %}"
        "{% else %}{{ " + _fill(f.assistant, {"content": "m['content']"}) + " + "
        + _lit(f.stop.replace("<eos>", template.eos)) + " }}{% endif %}"
        "{% endfor %}"
    )


def _lit(s: str) -> str:
    """A Jinja string literal for `s` (JSON string syntax is valid Jinja)."""
    return json.dumps(s, ensure_ascii=False)


def _fill(fmt: str, slots: dict[str, str]) -> str:
    """A Jinja expression for `fmt.format(**values)`: literal text and the slots' expressions joined by `+`
    ('{{' / '}}' are literal braces, as in str.format)."""
    parts, pos = [], 0
    for m in re.finditer(r"\{\{|\}\}|\{(\w+)\}", fmt):
        if m.group(1) is None:  # an escaped brace
            continue
        if m.group(1) not in slots:
            raise TunelabError(f"unknown placeholder {m.group(0)} in {fmt!r}", where="data.custom_template",
                               hint=f"use {', '.join('{' + k + '}' for k in slots)}")
        parts += [_lit(fmt[pos:m.start()].replace("{{", "{").replace("}}", "}")), "(" + slots[m.group(1)] + ")"]
        pos = m.end()
    parts.append(_lit(fmt[pos:].replace("{{", "{").replace("}}", "}")))
    return " + ".join(parts)


def build_template(name: str, tokenizer, system: str | None = None, custom: dict | None = None) -> Template:
    """Resolve `data.template` for a tokenizer; raises TunelabError for unknown names."""
    eos = tokenizer.eos_token or ""
    bos = tokenizer.bos_token or ""
    if name == "auto":
        jinja = getattr(tokenizer, "chat_template", None)
        if not jinja:
            # base models have no chat template: their family's built-in format (gemma3 -> gemma), else alpaca
            from tunelab.models.base_format import family_template

            base = family_template(tokenizer)
            base = base if base in BUILTIN or base in BUILTIN_JINJA else "alpaca"
            fallback = build_template(base, tokenizer, system)  # qwen3/llama3/chatml/mistral with their tools
            fallback.extra = {"fallback_from": "auto"}
            return fallback
        probe = render_jinja(jinja, [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], False,
                             bos_token=bos, eos_token=eos)
        return Template("auto", system=system, jinja=jinja, eos=eos, bos=bos, add_eos=bool(eos) and eos not in probe)
    if name in BUILTIN or name in BUILTIN_JINJA:
        jf = BUILTIN_JINJA.get(name)
        return Template(name, system=system, fmt=BUILTIN.get(name), jinja=jf.jinja if jf else None, eos=eos)
    if name == "custom":
        if not custom:
            raise TunelabError("template 'custom' needs data.custom_template", where="data.custom_template",
                               hint="keys: system, user, assistant_prefix, stop (with {content} placeholders)")
        allowed = set(TurnFormat.__dataclass_fields__)
        bad = [k for k in custom if k not in allowed]
        if bad:
            raise TunelabError(f"unknown key '{bad[0]}'", where="data.custom_template", hint=f"valid: {', '.join(sorted(allowed))}")
        return Template("custom", system=system, fmt=TurnFormat(**custom), eos=eos)
    from difflib import get_close_matches

    close = get_close_matches(name, NAMES, n=1)
    raise TunelabError(f"unknown template '{name}'", where="data.template",
                       hint=f"did you mean '{close[0]}'?" if close else f"one of: {', '.join(NAMES)}")
