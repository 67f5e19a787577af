"""An Ollama Modelfile whose TEMPLATE formats chats exactly as the run was trained.

    FROM ./<run>-<quant>.gguf
    TEMPLATE \"\"\"<a Go template over .System and .Messages>\"\"\"
    SYSTEM \"\"\"<data.system>\"\"\"                (when the run has one)
    PARAMETER stop "<|im_end|>"                 (every end-of-turn text: the format's stop, the EOS text)
    PARAMETER temperature 0
    PARAMETER num_ctx 2048

How Ollama fills the template (server/routes.go, template/template.go): a chat request gets the
Modelfile's SYSTEM as a first system message when it has none of its own; `.System` is all system
messages joined by a blank line, `.Messages` every message (system ones included, consecutive
messages of one role merged with "\\n\\n"); the template itself must write the assistant prefix after
the last user message. `render_chat` (export/ollama_reader.py) reproduces exactly that, on our
Go-template interpreter.

The formats with tools (chatml, qwen3, llama3, mistral) get their family's hand-written TEMPLATE
(export/ollama_families.py) when it renders every plain, tool and reasoning probe as the run does. The
other built-in and custom formats are translated from their TurnFormat (as `chat_template_jinja` does
for Jinja): a conversation ending with a user turn renders as `template.prompt_text(messages)`, one
ending with an assistant turn as the training text `"".join(template.segments(messages))`. An `auto`
template (the model's own Jinja) is exported as the built-in format that renders identically on the
probe conversations (system + user, user alone, multi-turn, with and without a final reply; a default
system prompt of the Jinja, like SmolLM2's, is found and kept), else as the family whose TEMPLATE
does; when none does, `--to ollama` is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from tunelab.data.chat_jinja import BUILTIN_JINJA
from tunelab.data.templates import BUILTIN, Template, TurnFormat, render_jinja
from tunelab.errors import TunelabError
from tunelab.export.gotemplate import GoTemplate, GoTemplateError, go_quote
from tunelab.export.ollama_families import FAMILIES, OllamaFamily, reasoning_probes
from tunelab.export.ollama_reader import parse_modelfile, render_chat
from tunelab.export.ollama_tools import same_but_json, tool_probes

OLLAMA_DEFAULT_CTX = 2048  # Ollama's long-standing default num_ctx

_SYS = "You are a careful assistant. Answer briefly."
_U1, _A1 = 'Say "{{ .System }}" in braces {', "} Done: {{ .Prompt }}\n- a list\n"
_U2, _A2 = "  And now?\n\nTwo lines.", "Fine."


def probe_conversations() -> list[list[dict]]:
    """Conversations a chat template must render identically: with and without a system turn, one and
    two user turns, ending on a user turn (the generation prompt) or on a reply (the training text).
    The contents hold quotes, braces, Go actions and white space at both ends."""
    s, u1, a1, u2, a2 = ({"role": r, "content": c} for r, c in
                         [("system", _SYS), ("user", _U1), ("assistant", _A1), ("user", _U2), ("assistant", _A2)])
    prompts = [[u1], [s, u1], [u1, a1, u2], [s, u1, a1, u2]]
    return prompts + [p + [a2] for p in prompts]


def _text(template: Template, conv: list[dict]) -> str:
    """What the run's template renders: the generation prompt, or the full training text."""
    if conv[-1]["role"] == "user":
        return template.prompt_text(conv)
    return "".join(t for t, _ in template.segments(conv))


def _renders_alike(a: Template, b: Template) -> bool:
    try:
        return all(_text(a, c) == _text(b, c) for c in probe_conversations())
    except Exception:  # a Jinja template that refuses a probe (e.g. no system role) matches nothing
        return False


def match_builtin(template: Template) -> Template | None:
    """The built-in format that renders like `template` (an `auto` Jinja) on every probe conversation,
    as a Template with the same system and EOS; None when no built-in does.

    A default system prompt the Jinja writes when the chat has none is found by rendering a user-only
    prompt and cutting it around where the built-in puts the system text."""
    for name, f in BUILTIN.items():
        candidates = [f.default_system, ""]
        if template.system is None:
            sentinel = "\x00SYSTEM\x00"
            probe = [{"role": "user", "content": _U1}]
            pre, _, post = Template(name, system=sentinel, fmt=f, eos=template.eos).prompt_text(probe).partition(sentinel)
            try:
                got = template.prompt_text(probe)
            except Exception:
                continue
            if got.startswith(pre) and got.endswith(post) and len(got) > len(pre) + len(post):
                candidates.append(got[len(pre):len(got) - len(post)])
        for default in dict.fromkeys(candidates):
            cand = Template(name, system=template.system, fmt=replace(f, default_system=default), eos=template.eos,
                            extra={"matched_from": template.name})
            if _renders_alike(template, cand):
                return cand
    return None


# ---- the Go template -----------------------------------------------------------------------------------------
def _pieces(fmt: str, slots: dict[str, list]) -> list:
    """Tokens for `fmt.format(**slots)`: ("lit", text) and each slot's tokens; '{{'/'}}' are literal braces."""
    out, pos = [], 0
    for m in re.finditer(r"\{\{|\}\}|\{(\w+)\}", fmt):
        if m.group(1) is None:
            continue
        if m.group(1) not in slots:
            raise TunelabError(f"unknown placeholder {m.group(0)} in {fmt!r}", where="data.custom_template",
                               hint=f"use {', '.join('{' + k + '}' for k in slots)}")
        out += [("lit", fmt[pos:m.start()].replace("{{", "{").replace("}}", "}")), *slots[m.group(1)]]
        pos = m.end()
    return out + [("lit", fmt[pos:].replace("{{", "{").replace("}}", "}"))]


def _raw_ok(s: str) -> bool:
    """Can `s` stand as template text? Not when Go would read an action in it ('{{', or '{' just before
    one), or a Modelfile \"\"\" string could end in it ('"'), or Ollama's parser would drop a character
    (it keeps only printable runes, tabs and newlines)."""
    return "{{" not in s and not s.endswith("{") and '"' not in s and all(c.isprintable() or c in "\n\t" for c in s)


def _serialize(tokens: list) -> str:
    """Go template source. A control action goes on its own line as `{{- ...` (the trim eats only that
    layout newline), except right after text ending in white space, which the trim would eat too."""
    merged: list = []
    for kind, s in tokens:  # join neighbouring literals (so "{" + "{" can never form an action)
        if kind == "lit" and merged and merged[-1][0] == "lit":
            merged[-1] = ("lit", merged[-1][1] + s)
        elif kind != "lit" or s:
            merged.append((kind, s))
    out, ends_ws = [], False
    for kind, s in merged:
        if kind == "lit" and _raw_ok(s):
            out.append(s)
            ends_ws = s[-1] in " \t\n"
            continue
        if kind == "lit":
            out.append("{{ " + go_quote(s) + " }}")
        elif kind == "val":
            out.append("{{ " + s + " }}")
        else:
            out.append(("{{ " if ends_ws else "\n{{- " if out else "{{- ") + s + " }}")
        ends_ws = False
    return "".join(out)


def go_template(fmt: TurnFormat, default_system: str, eos: str) -> str:
    """The Go template of a TurnFormat, for Ollama's chat values (.System, .Messages).

    `default_system` is written into the template (used when the chat has no system message), so the
    template alone reproduces the run's system prompt even where no SYSTEM line can be written."""
    stop = fmt.stop.replace("<eos>", eos)
    sys_v, content = [("val", "$system")], [("val", ".Content")]
    t: list = [("ctl", "$system := .System")]
    if default_system:
        t += [("ctl", "if not $system"), ("ctl", f"$system = {go_quote(default_system)}"), ("ctl", "end")]
    t.append(("lit", fmt.bos))
    if fmt.system_in_user is None:
        t += [("ctl", "if $system"), *_pieces(fmt.system, {"content": sys_v}), ("ctl", "end")]
    t += [("ctl", "range .Messages"), ("ctl", 'if eq .Role "user"')]
    if fmt.system_in_user is not None:  # the first user turn carries the system text, then it is spent
        first = _pieces(fmt.system_in_user, {"system": sys_v, "user": content})
        t += [("ctl", "if $system"), *_pieces(fmt.user, {"content": first}), ("ctl", '$system = ""'),
              ("ctl", "else"), *_pieces(fmt.user, {"content": content}), ("ctl", "end")]
    else:
        t += _pieces(fmt.user, {"content": content})
    t += [("lit", fmt.assistant_prefix), ("ctl", 'else if eq .Role "assistant"'),
          *_pieces(fmt.assistant, {"content": content}), ("lit", stop), ("ctl", "end"), ("ctl", "end")]
    return _serialize(t)


@dataclass
class OllamaTemplate:
    text: str  # the TEMPLATE (Go)
    system: str | None  # the SYSTEM line (None: no system prompt, or one the Modelfile cannot quote)
    stops: list[str]  # PARAMETER stop values
    format: str  # the format it reproduces: "chatml", or "chatml (matched from auto)"
    source: Template  # the run's template, what `check_modelfile` compares against
    tools: bool = False  # the TEMPLATE renders .Tools, .ToolCalls and tool messages (export/ollama_families.py)
    calls: str = ""  # how a call reads, for the Modelfile comment: "Hermes <tool_call> calls"
    thinking: bool = False  # the TEMPLATE writes Qwen3-style reasoning blocks and reads Ollama's `think`
    runtime_bos: str = ""  # the BOS text Ollama puts before each prompt itself, which the TEMPLATE then leaves out


def leave_bos_to_runtime(ot: OllamaTemplate, bos: str) -> OllamaTemplate | None:
    """For a GGUF that says add_bos_token, `bos` the text of its BOS token: llama.cpp, so Ollama,
    tokenizes BOS + the TEMPLATE's text, and a TEMPLATE that also writes that text (`<bos>`, `<s>`,
    `<|begin_of_text|>`) gives two BOS tokens where training had one. The TEMPLATE without it (every
    occurrence, as a template may write it in each branch of its first turn), or None when it writes
    none; `check_modelfile(..., prefix=bos)` then says whether BOS + TEMPLATE still renders as the run."""
    if not bos or bos not in ot.text:
        return None
    return replace(ot, text=ot.text.replace(bos, ""), runtime_bos=bos)


def ollama_template(template: Template) -> OllamaTemplate:
    """The Ollama TEMPLATE, SYSTEM and stop strings of a run's template.

    A format with tools (export/ollama_families.FAMILIES: chatml, qwen3, llama3, mistral) gets its family's
    TEMPLATE when that renders every plain, tool and reasoning probe as the run's template does; the other
    TurnFormats get `go_template` (no tools). An `auto` Jinja is matched by rendering: a TurnFormat
    (`match_builtin`, then its family's tools when they match too), else a family's TEMPLATE as a whole.

    Raises:
        TunelabError: a template that neither a TurnFormat nor a family reproduces."""
    system = template.system if template.system and _quotable(template.system) else None
    fmt_t, label = template, template.name
    if template.fmt is None:
        fmt_t = match_builtin(template) if template.jinja is not None else None
        if fmt_t is None:
            found = _family_by_rendering(template, system)
            if found is None:
                raise TunelabError(f"the run's `{template.name}` chat template matches no built-in format, so no "
                                   "Ollama TEMPLATE equivalent to it can be written", where="--to ollama",
                                   hint="train with data.template: chatml, qwen3, llama3 or mistral (or llama2, "
                                        "gemma, phi3, alpaca, qa, custom), or export --to gguf and write the "
                                        "TEMPLATE yourself")
            fam, text = found
            label = fam.name if template.name == fam.name else f"{fam.name} (matched from {template.name})"
            return _with_family(template, fam, text, system, label)
        label = f"{fmt_t.name} (matched from {template.name})"
    f = fmt_t.fmt
    default = template.system if template.system is not None else f.default_system
    for fam in FAMILIES.values():
        if fam.name in BUILTIN and f == replace(BUILTIN[fam.name], default_system=f.default_system):
            text = fam.template(default)
            if getattr(template, "supports_tools", False) and _mismatch(text, system, template) is None:
                return _with_family(template, fam, text, system, label, fmt_t.stop_strings)
    return OllamaTemplate(go_template(f, default, template.eos), system, fmt_t.stop_strings, label, template)


def _with_family(template: Template, fam: OllamaFamily, text: str, system: str | None, label: str,
                 stops: list[str] | None = None) -> OllamaTemplate:
    stops = list(dict.fromkeys([*(stops or template.stop_strings), BUILTIN_JINJA[fam.name].stop]))
    return OllamaTemplate(text, system, stops, label, template, tools=True, calls=fam.calls, thinking=fam.thinking)


def _family_by_rendering(template: Template, system: str | None) -> tuple[OllamaFamily, str] | None:
    """The family (the run's own name first) whose TEMPLATE renders every probe as the run's Jinja does."""
    if template.jinja is None or not getattr(template, "supports_tools", False):
        return None
    default = template.system or ""
    for fam in sorted(FAMILIES.values(), key=lambda fam: fam.name != template.name):
        text = fam.template(default)
        try:
            if _mismatch(text, system, template, plain=True) is None:
                return fam, text
        except Exception:  # a Jinja that refuses a probe: not this family
            continue
    return None


def _mismatch(template_text: str, system: str | None, template: Template, plain: bool = False,
              prefix: str = "") -> str | None:
    """The first probe `prefix` + the TEMPLATE renders unlike the run's template (a message), or None: the
    plain probes (with `plain`), the tool probes and the reasoning probes. JSON is compared as values
    (`same_but_json`). `prefix`: what the runtime puts before every prompt (its BOS)."""
    if plain:
        for conv in probe_conversations():
            got, want = prefix + render_chat(template_text, conv, system), _text(template, conv)
            if got != want:
                return f"the TEMPLATE renders {got[:80]!r}..., the run's template {want[:80]!r}..."
    for tools, conv in tool_probes() + reasoning_probes():
        got = prefix + render_chat(template_text, conv, system, tools)
        want = "".join(t for t, _ in template.segments(conv, add_generation_prompt=conv[-1]["role"] != "assistant",
                                                       tools=tools or None))
        if not same_but_json(got, want):
            return f"the TEMPLATE renders {got[:80]!r}..., the run's template {want[:80]!r}... (tools, reasoning)"
    if "isthinkset" in GoTemplate(template_text).identifiers():  # think: false = the Jinja's enable_thinking=false
        conv = [{"role": "user", "content": _U1}]
        got = prefix + render_chat(template_text, conv, system, think=False)
        msgs = conv if template.system is None else [{"role": "system", "content": template.system}, *conv]
        want = render_jinja(template.jinja, msgs, True, template.bos, template.eos, enable_thinking=False)
        if got != want:
            return f"with think false the TEMPLATE renders {got[-60:]!r}, the run's template {want[-60:]!r}"
    return None


# ---- the Modelfile -------------------------------------------------------------------------------------------
def _quotable(s: str) -> bool:
    """Can `s` be written as \"\"\"s\"\"\" and read back whole by Ollama's Modelfile parser?"""
    return '"""' not in s and not s.startswith('"') and all(c.isprintable() or c in "\n\t" for c in s)


def _value(s: str) -> str | None:
    """A PARAMETER value as Ollama reads it back: in double quotes, or triple ones; None when neither works."""
    if s and '"' not in s and s.isprintable():
        return f'"{s}"'
    return f'"""{s}"""' if s and _quotable(s) and "\n" not in s else None


def context_length(model_config: dict) -> int | None:
    """The positions a model supports, from its config.json (max_position_embeddings and its aliases)."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        v = model_config.get(key) or (model_config.get("text_config") or {}).get(key)
        if isinstance(v, int) and v > 0:
            return v
    return None


def choose_num_ctx(max_length: int | None, model_ctx: int | None) -> int:
    """num_ctx = min(model context, max(data.max_length, 2048)).

    Every training sequence fit in data.max_length tokens, so the context must hold at least that;
    going below Ollama's default 2048 would only make the export forget chat history sooner than any
    other Ollama model (Ollama drops the oldest messages to fit num_ctx). Going up to the model's full
    context (8192 for SmolLM2, 131072 for Llama 3.1) would make Ollama reserve a KV cache for it on
    every load (2 x layers x kv_heads x head_dim x num_ctx x 2 bytes: 96 MiB at 2048 but 384 MiB at
    8192 for SmolLM2-135M) for lengths the tuning never saw; and never beyond the positions the model
    has. E.g. max_length 512 and an 8192-position model: min(8192, max(512, 2048)) = 2048."""
    want = max(max_length or 0, OLLAMA_DEFAULT_CTX)
    return min(want, model_ctx) if model_ctx else want


def modelfile_text(gguf_name: str, ot: OllamaTemplate, num_ctx: int, temperature: float = 0.0,
                   run_name: str = "") -> str:
    """The Modelfile. temperature 0 (greedy) is what `tunelab generate`/`chat` default to and how the run's
    report sampled its base-vs-tuned replies, so `ollama run` answers as the report showed."""
    if not _quotable(ot.text) or not ot.text.startswith("{{"):
        raise TunelabError("the generated TEMPLATE cannot be quoted in a Modelfile", where="--to ollama")
    lines = [f"# written by tunelab{f' from run {run_name}' if run_name else ''}: ollama create NAME -f Modelfile",
             f"# TEMPLATE reproduces the run's prompt format: {ot.format}"
             + (f" with tools ({ot.calls})" if ot.tools else "") + (", thinking" if ot.thinking else "")
             + (f"; {ot.runtime_bos} is the BOS Ollama adds (the GGUF's add_bos_token)" if ot.runtime_bos else ""),
             f"FROM ./{gguf_name}", f'TEMPLATE """{ot.text}"""']
    if ot.system is not None:
        lines.append(f'SYSTEM """{ot.system}"""')
    elif ot.source.system:
        lines.append("# SYSTEM not written (the text cannot be quoted here): the TEMPLATE holds it as its default")
    for s in ot.stops:
        v = _value(s)
        lines.append(f"PARAMETER stop {v}" if v else f"# PARAMETER stop {s!r} cannot be written in a Modelfile")
    lines += [f"PARAMETER temperature {temperature:g}", f"PARAMETER num_ctx {num_ctx}"]
    return "\n".join(lines) + "\n"


def ollama_name(run_name: str) -> str:
    """A model name for `ollama create`: lower case, letters, digits, '.', '_' and '-'."""
    name = re.sub(r"[^a-z0-9._-]+", "-", run_name.lower()).strip("-._")
    return name or "tuned"


# ---- the check ----------------------------------------------------------------------------------------------
def check_modelfile(text: str, template: Template, prefix: str = "") -> int:
    """Read the Modelfile as Ollama does and render every probe conversation through its TEMPLATE and
    SYSTEM, after `prefix` (the BOS text the runtime adds: OllamaTemplate.runtime_bos); returns how many
    matched the run's `template`. TunelabError at the first that differs."""
    try:
        cmds = dict(parse_modelfile(text))
        convs = probe_conversations()
        for conv in convs:
            got = prefix + render_chat(cmds["template"], conv, cmds.get("system"))
            want = _text(template, conv)
            if got != want:
                raise TunelabError(f"the Modelfile TEMPLATE renders {got[:60]!r}..., the run's template "
                                   f"{want[:60]!r}... ({len(conv)} messages)", where="Modelfile",
                                   hint="please report this: the export would format prompts unlike training")
        if "tools" in GoTemplate(cmds["template"]).identifiers():  # Ollama: the model supports tools
            bad = _mismatch(cmds["template"], cmds.get("system"), template, prefix=prefix)
            if bad:
                raise TunelabError(bad, where="Modelfile", hint="please report this: the export would format "
                                                               "tool calls unlike training")
            thinking = "isthinkset" in GoTemplate(cmds["template"]).identifiers()
            return len(convs) + len(tool_probes()) + len(reasoning_probes()) + thinking
    except (ValueError, GoTemplateError, KeyError) as e:
        raise TunelabError(f"the Modelfile does not read back: {e}", where="Modelfile") from e
    return len(convs)
