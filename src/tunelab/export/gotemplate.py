"""A small interpreter of Go's text/template: the subset Ollama chat templates use.

    {{ P }} {{- P }} {{ P -}} {{/* c */}}   print; trim white space (space, \\t, \\r, \\n) before / after
    {{ if P }} {{ else if P }} {{ else }} {{ end }}, {{ with P }}, {{ range [$i,] [$m :=] P }}, break, continue
    {{ $x := P }} {{ $x = P }}             declare / assign (assignment reaches a variable outside an if/range)
    . .Field.Sub $ $.Field $x.Field "s" `raw` 'c' 12 1.5 true false nil (P) P|f
    and or not eq ne lt le gt ge len index slice printf print json

Semantics follow Go's: truth is "not the zero value" (false, 0, "", nil, empty list or map); `and` /
`or` short-circuit and return the deciding argument; `eq a b c` is a == b || a == c and refuses to
compare a string with a number; `len "é"` is 2 (bytes); a variable lives until the `end` of the
if/with/range it was declared in, and a range body's variables are fresh each iteration. A missing
key of a map (a dict) gives nil, printed `<no value>` (Ollama parses with missingkey=zero); a
missing field of a `Struct` is an error, as for a Go struct. `template`, `define` and `block` are not
supported (GoTemplateError). Use: `GoTemplate(src).execute(data) -> str`.
"""

from __future__ import annotations

import json
import re

__all__ = ["GoTemplate", "GoTemplateError", "Struct", "go_quote"]


class GoTemplateError(ValueError):
    """A template that does not parse, or an action that fails (what Go's Parse/Execute return as errors)."""


class Struct(dict):
    """A Go struct value: `.Name` of a missing field is an error (on a plain dict, a map, it is nil)."""


_WS = " \t\r\n"
_QUOTED = r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|\'(?:[^\'\\\n]|\\.)+\''
_ACTION = re.compile(r"\{\{(?:(-)\s)?\s*/\*.*?\*/\s*(?:\s(-))?\}\}"  # a comment
                     r"|\{\{(?:(-)(?=\s))?((?:" + _QUOTED + r"|[^\"`'}]|\}(?!\}))*?)(?:(?<=\s)(-))?\}\}", re.S)
_TOKEN = re.compile(r"""(?P<ws>\s+)|(?P<str>"(?:[^"\\\n]|\\.)*")|(?P<raw>`[^`]*`)|(?P<char>'(?:[^'\\\n]|\\.)+')
  |(?P<assign>:=|=)|(?P<var>\$\w*(?:\.[A-Za-z_]\w*)*)|(?P<num>[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+))
  |(?P<field>(?:\.[A-Za-z_]\w*)+|\.)|(?P<ident>[A-Za-z_]\w*)|(?P<punct>[()|,])""", re.X)
_ESC = re.compile(r"\\(?:([abfnrtv\\'\"])|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([0-7]{3}))")
_SIMPLE = dict(a="\a", b="\b", f="\f", n="\n", r="\r", t="\t", v="\v")


def _unescape(body: str) -> str:
    return _ESC.sub(lambda m: _SIMPLE.get(m[1], m[1]) if m[1] else chr(int(m[2] or m[3] or m[4], 16))
                    if (m[2] or m[3] or m[4]) else chr(int(m[5], 8)), body)


def go_quote(s: str) -> str:
    """A Go interpreted string literal for `s`: printable characters as themselves, the rest escaped."""
    named = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    return '"' + "".join(named.get(c) or (c if c.isprintable() else f"\\U{ord(c):08x}") for c in s) + '"'


# ---- parsing -------------------------------------------------------------------------------------------------
def _items(src: str) -> list[tuple[str, str | None]]:
    """[("text", s) | ("action", inner) | ("comment", None)], the trim markers applied to the text."""
    items, pos, trim = [], 0, False
    for m in _ACTION.finditer(src):
        text = src[pos:m.start()]
        text = text.lstrip(_WS) if trim else text
        text = text.rstrip(_WS) if (m.group(1) or m.group(3)) else text
        items += [("text", text)] if text else []
        items.append(("comment", None) if m.group(4) is None else ("action", m.group(4)))
        trim, pos = bool(m.group(2) or m.group(5)), m.end()
    tail = src[pos:].lstrip(_WS) if trim else src[pos:]
    items += [("text", tail)] if tail else []
    for kind, text in items:
        if kind == "text" and "{{" in text:
            raise GoTemplateError(f"unclosed action near {text[text.index('{{'):][:30]!r}")
    return items


def _tokens(inner: str) -> list[tuple[str, object]]:
    out, pos = [], 0
    while pos < len(inner):
        m = _TOKEN.match(inner, pos)
        if not m:
            raise GoTemplateError(f"unexpected {inner[pos:pos + 10]!r} in action {{{{{inner}}}}}")
        kind, t, pos = m.lastgroup, m.group(), m.end()
        if kind == "ident" and t in _CONSTS:
            out.append(("lit", _CONSTS[t]))
        elif kind != "ws":
            out.append(_CONVERT[kind](t) if kind in _CONVERT else (kind, t))
    return out


_CONSTS = {"true": True, "false": False, "nil": None}
_CONVERT = {
    "str": lambda t: ("lit", _unescape(t[1:-1])), "raw": lambda t: ("lit", t[1:-1]),
    "char": lambda t: ("lit", ord(_unescape(t[1:-1]))),
    "num": lambda t: ("lit", int(t) if re.fullmatch(r"[-+]?\d+", t) else float(t)),
    "field": lambda t: ("field", [] if t == "." else t[1:].split(".")),
    "var": lambda t: ("var", (t.split(".")[0], t.split(".")[1:])),
}


class _Pipe:
    """decl: the declared (or, with `assign`, assigned) variables; cmds: commands joined by |, each a list
    of operands ("lit" value, "field" names, "var" (name, names), "ident" function, "pipe" _Pipe)."""

    def __init__(self, toks: list, max_decl: int = 1, cmds: list | None = None):
        self.decl, self.assign = [], False
        if cmds is not None:
            self.cmds = cmds
            return
        n = 3 if max_decl == 2 and len(toks) > 3 and toks[1] == ("punct", ",") else 1
        names = toks[:n:2]
        if (max_decl and len(toks) > n and toks[n][0] == "assign"
                and all(k == "var" and not v[1] for k, v in names)):
            self.decl, self.assign, toks = [v[0] for _, v in names], toks[n][1] == "=", toks[n + 1:]
        self.cmds, stack = [[]], []
        for t in toks:
            if t == ("punct", "("):
                stack.append(self.cmds)
                self.cmds = [[]]
            elif t == ("punct", ")"):
                if not stack or not all(self.cmds):
                    raise GoTemplateError("unexpected right paren or missing value")
                inner, self.cmds = self.cmds, stack.pop()
                self.cmds[-1].append(("pipe", _Pipe([], cmds=inner)))
            elif t == ("punct", "|"):
                self.cmds.append([])
            elif t[0] in ("lit", "field", "var", "ident"):
                self.cmds[-1].append(t)
            else:
                raise GoTemplateError(f"unexpected {t[1]!r} in pipeline")
        if stack or not all(self.cmds):
            raise GoTemplateError("unclosed left paren or missing value in pipeline")


def _parse(items: list, i: int, depth: int) -> tuple[list, int, str | None, list]:
    """Nodes up to an else/end at this depth: (nodes, next index, "else"/"end"/None, tokens after else)."""
    nodes: list = []
    while i < len(items):
        kind, body = items[i]
        i += 1
        if kind != "action":
            nodes += [("text", body)] if kind == "text" else []
            continue
        toks = _tokens(body)
        if not toks:
            raise GoTemplateError("missing value for command")
        word = toks[0][1] if toks[0][0] == "ident" else None
        if word in ("end", "else"):
            if depth == 0:
                raise GoTemplateError(f"unexpected {{{{{word}}}}}")
            return nodes, i, word, toks[1:]
        if word in ("if", "with", "range"):
            node, i = _control(word, toks[1:], items, i, depth)
            nodes.append(node)
        elif word in ("break", "continue"):
            nodes.append((word,))
        elif word in ("template", "define", "block"):
            raise GoTemplateError(f"{{{{{word}}}}} is not supported")
        else:
            nodes.append(("action", _Pipe(toks)))
    if depth:
        raise GoTemplateError("unexpected EOF: missing {{end}}")
    return nodes, i, None, []


def _control(word: str, toks: list, items: list, i: int, depth: int) -> tuple[tuple, int]:
    """(word, pipe, body, else-body) of an if/with/range; `else if`/`else with` nest in the else-body."""
    if not toks:
        raise GoTemplateError(f"missing value for {word}")
    pipe = _Pipe(toks, 2 if word == "range" else 1)
    body, i, stop, rest = _parse(items, i, depth + 1)
    other: list = []
    if stop == "else" and rest and rest[0][0] == "ident" and rest[0][1] in ("if", "with"):
        node, i = _control(rest[0][1], rest[1:], items, i, depth)
        other = [node]
    elif stop == "else":
        other, i, stop, _ = _parse(items, i, depth + 1)
        if stop != "end":
            raise GoTemplateError(f"expected {{{{end}}}} after {{{{else}}}} of {word}")
    return (word, pipe, body, other), i


# ---- values and functions ------------------------------------------------------------------------------------
def truth(v) -> bool:
    """Go's truth: not the zero value of its type."""
    return bool(v) if isinstance(v, (bool, int, float, str, list, tuple, dict)) or v is None else True


def show(v) -> str:
    """How an action prints a value (fmt's %v; a value with a String method, `go_string`, prints that)."""
    if v is None or isinstance(getattr(v, "go_string", None), str):
        return "<no value>" if v is None else v.go_string
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e21 else repr(v)
    if isinstance(v, (list, tuple, Struct)):  # [a b] for a slice, {a b} for a struct
        return ("{%s}" if isinstance(v, Struct) else "[%s]") % " ".join(show(x) for x in (v.values() if isinstance(v, Struct) else v))
    if isinstance(v, dict):
        return "map[" + " ".join(f"{show(k)}:{show(x)}" for k, x in sorted(v.items())) + "]"
    return str(v)


def _kind(v) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string"}.get(type(v), "other")


def _compare(op: str, a, b) -> bool:
    if (a is None or b is None) and op == "eq":
        return a is b
    if a is None or b is None or _kind(a) != _kind(b) or (_kind(a) in ("other", "bool") and op != "eq"):
        raise GoTemplateError(f"{op}: incompatible types for comparison ({_kind(a)} and {_kind(b)})")
    return {"eq": a == b, "lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]


def _printf(fmt: str, *args) -> str:
    """fmt.Sprintf for %s %v %d %q %t %% (with a width: %5s, %-5s)."""
    rest = list(args)

    def one(m: re.Match) -> str:
        flags, width, verb = m.groups()
        if verb == "%":
            return "%"
        if not rest:
            return f"%!{verb}(MISSING)"
        a = rest.pop(0)
        ok = verb in "sv" or (verb == "d" and _kind(a) == "int") or (verb == "t" and _kind(a) == "bool") or verb == "q"
        s = (go_quote(a) if verb == "q" and isinstance(a, str) else show(a)) if ok else f"%!{verb}({_kind(a)}={show(a)})"
        return s.ljust(int(width or 0)) if "-" in flags else s.rjust(int(width or 0))

    out = re.sub(r"%([-+# 0]*)(\d+)?([a-zA-Z%])", one, fmt)
    return out + ("%!(EXTRA " + ", ".join(show(x) for x in rest) + ")" if rest else "")


def _len(v) -> int:
    if not isinstance(v, (str, list, tuple, dict)):
        raise GoTemplateError(f"len of type {_kind(v)}")
    return len(v.encode("utf-8")) if isinstance(v, str) else len(v)  # Go strings count bytes


def _index(v, *keys):
    for k in keys:
        if not isinstance(v, dict) and not (isinstance(v, (list, tuple)) and _kind(k) == "int" and 0 <= k < len(v)):
            raise GoTemplateError(f"index out of range: {show(k)}")
        v = v.get(k) if isinstance(v, dict) else v[k]
    return v


def _slice(v, i: int = 0, j: int | None = None):
    seq = v.encode("utf-8") if isinstance(v, str) else v
    if not isinstance(seq, (bytes, list, tuple)) or not 0 <= i <= (len(seq) if j is None else j) <= len(seq):
        raise GoTemplateError(f"can't slice {show(v)} [{i}:{j}]")
    out = seq[i:j]
    return out.decode("utf-8", "replace") if isinstance(v, str) else list(out)


def _json(v) -> str:
    s = json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # as Go's json.Marshal


def _sprint(*args) -> str:
    """fmt.Sprint: a space between two operands when neither is a string."""
    return "".join((" " if i and not isinstance(x, str) and not isinstance(args[i - 1], str) else "") + show(x)
                   for i, x in enumerate(args))


FUNCS = {
    "not": lambda a: not truth(a), "eq": lambda a, b, *more: any(_compare("eq", a, x) for x in (b, *more)),
    "ne": lambda a, b: not _compare("eq", a, b), "lt": lambda a, b: _compare("lt", a, b),
    "le": lambda a, b: _compare("le", a, b), "gt": lambda a, b: _compare("gt", a, b),
    "ge": lambda a, b: _compare("ge", a, b), "len": _len, "index": _index, "slice": _slice, "printf": _printf,
    "json": _json, "print": _sprint,
}


# ---- execution -----------------------------------------------------------------------------------------------
class _Loop(Exception):
    """{{ break }} / {{ continue }} unwinding to their range."""


class GoTemplate:
    """A parsed template; `execute(data)` renders it with `data` as dot and as `$`."""

    def __init__(self, src: str):
        self.src = src
        items = _items(src)
        self.nodes = _parse(items, 0, 0)[0]
        self._names = {n.lower() for kind, body in items if kind == "action" for k, v in _tokens(body)
                       if k in ("field", "var") for n in (v if k == "field" else [v[0], *v[1]])}

    def execute(self, data) -> str:
        out: list[str] = []
        try:
            self._walk(self.nodes, data, [["$", data]], out)
        except _Loop:
            raise GoTemplateError("break/continue outside range") from None
        return "".join(out)

    def identifiers(self) -> set[str]:
        """Every field and variable name the template mentions, lower-cased (what Ollama's `Vars` returns)."""
        return set(self._names)

    def _walk(self, nodes: list, dot, vars_: list, out: list[str]) -> None:
        for n in nodes:
            if n[0] == "text":
                out.append(n[1])
            elif n[0] == "action":
                v = self._pipe(n[1], dot, vars_)
                out += [] if n[1].decl else [show(v)]
            elif n[0] in ("break", "continue"):
                raise _Loop(n[0])
            else:
                mark = len(vars_)  # variables declared from here on end with this if/with/range
                try:
                    if n[0] == "range":
                        self._range(n, dot, vars_, out)
                    elif truth(v := self._pipe(n[1], dot, vars_)):
                        self._walk(n[2], v if n[0] == "with" else dot, vars_, out)
                    else:
                        self._walk(n[3], dot, vars_, out)
                finally:
                    del vars_[mark:]

    def _range(self, n: tuple, dot, vars_: list, out: list[str]) -> None:
        _, pipe, body, other = n
        v = self._pipe(pipe, dot, vars_, declare=False)
        if v is None or isinstance(v, (list, tuple)):
            seq = list(enumerate(v or []))
        elif isinstance(v, dict) and not isinstance(v, Struct):
            seq = [(k, v[k]) for k in sorted(v)]
        else:
            raise GoTemplateError(f"range can't iterate over {show(v)}")
        if not seq:
            self._walk(other, dot, vars_, out)
        mark = len(vars_)
        for key, elem in seq:
            vars_ += [[pipe.decl[-1], elem]] if len(pipe.decl) == 1 else [[pipe.decl[0], key], [pipe.decl[1], elem]] \
                if pipe.decl else []
            try:
                self._walk(body, elem, vars_, out)
            except _Loop as e:
                if e.args[0] == "break":
                    break
            finally:
                del vars_[mark:]

    def _pipe(self, p: _Pipe, dot, vars_: list, declare: bool = True):
        v = None
        for i, cmd in enumerate(p.cmds):
            v = self._cmd(cmd, dot, vars_, [v] if i else [])
        if declare and p.assign:
            self._slot(vars_, p.decl[0])[1] = v
        elif declare and p.decl:
            vars_.append([p.decl[0], v])
        return v

    def _cmd(self, cmd: list, dot, vars_: list, piped: list):
        (kind, name), args = cmd[0], cmd[1:]
        if kind != "ident":
            if args or piped:
                raise GoTemplateError(f"can't give argument to non-function {show(name)}")
            return self._arg(cmd[0], dot, vars_)
        if name in ("and", "or"):  # short-circuit: the deciding argument is the value
            getters = [lambda a=a: self._arg(a, dot, vars_) for a in args] + [lambda v=v: v for v in piped]
            if not getters:
                raise GoTemplateError(f"wrong number of args for {name}")
            for get in getters:
                if truth(v := get()) != (name == "and"):
                    return v
            return v
        if name not in FUNCS:
            raise GoTemplateError(f'function "{name}" not defined')
        try:
            return FUNCS[name](*[self._arg(a, dot, vars_) for a in args], *piped)
        except TypeError:
            raise GoTemplateError(f"wrong number of args for {name}") from None

    @staticmethod
    def _slot(vars_: list, name: str) -> list:
        for slot in reversed(vars_):
            if slot[0] == name:
                return slot
        raise GoTemplateError(f"undefined variable: {name}")

    def _arg(self, a: tuple, dot, vars_: list):
        kind, val = a
        if kind == "lit":
            return val
        if kind == "pipe":
            return self._pipe(val, dot, vars_)
        v, names = (dot, val) if kind == "field" else (self._slot(vars_, val[0])[1], val[1])
        for name in names:
            if isinstance(v, Struct) and name not in v:
                raise GoTemplateError(f"can't evaluate field {name}")
            if not isinstance(v, dict):
                raise GoTemplateError(f"nil pointer evaluating .{name}" if v is None else
                                      f"can't evaluate field {name} in type {_kind(v)}")
            v = v.get(name)
        return v
