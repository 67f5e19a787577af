"""The Go text/template interpreter on small cases with the output Go's text/template gives."""

from __future__ import annotations

import pytest

from tunelab.export.gotemplate import GoTemplate, GoTemplateError, Struct, go_quote


def render(src: str, data=None) -> str:
    return GoTemplate(src).execute({} if data is None else data)


def msgs(*pairs):
    return [Struct(Role=r, Content=c) for r, c in pairs]


@pytest.mark.parametrize("src, want", [
    ("a {{ .X }} b", "a 1 b"),
    ("a  {{- .X }}  b", "a1  b"),
    ("a  {{ .X -}}  \n b", "a  1b"),
    ("a \n {{- .X -}} \n b", "a1b"),
    ("{{- /* a comment */ -}}\n x", "x"),
    ("a{{/* c */}}b", "ab"),
    ("{{ .Y }}", "<no value>"),  # a missing map key is nil (missingkey=zero)
    ('{{ "{{" }}{{ `raw\\n` }}{{ "tab\\tq\\"" }}', '{{raw\\ntab\tq"'),
    ("{{ 3 }} {{ -2 }} {{ 1.5 }} {{ 2.0 }} {{ true }} {{ 'a' }}", "3 -2 1.5 2 true 97"),
    ("{{ $x := 5 }}{{ $x }}", "5"),
    ("{{ .X | printf \"%d!\" }}", "1!"),
])
def test_actions_and_trimming(src, want):
    assert render(src, {"X": 1}) == want


@pytest.mark.parametrize("x, want", [(0, "zero"), (1, "one"), (2, "many")])
def test_if_else_if_else(x, want):
    src = '{{ if eq .X 0 }}zero{{ else if eq .X 1 }}one{{ else }}many{{ end }}'
    assert render(src, {"X": x}) == want


@pytest.mark.parametrize("value, truth", [
    ("", False), ("x", True), (0, False), (3, True), (None, False), ([], False), ([0], True), ({}, False),
    (False, False), (0.0, False),
])
def test_truth_is_not_the_zero_value(value, truth):
    assert render("{{ if .V }}T{{ else }}F{{ end }}", {"V": value}) == ("T" if truth else "F")


def test_range_with_index_dollar_and_last():
    """The `$last` idiom of Ollama's own templates."""
    src = ("{{- range $i, $m := .Messages }}{{ $i }}:{{ .Role }}"
           "{{- if eq (len (slice $.Messages $i)) 1 }}(last){{ else }},{{ end }}{{ end }}")
    assert render(src, {"Messages": msgs(("user", "a"), ("assistant", "b"), ("user", "c"))}) == \
        "0:user,1:assistant,2:user(last)"


def test_range_forms_else_break_continue():
    assert render("{{ range .L }}[{{ . }}]{{ end }}", {"L": ["a", "b"]}) == "[a][b]"
    assert render("{{ range $e := .L }}{{ $e }}{{ end }}", {"L": [1, 2]}) == "12"
    assert render("{{ range .L }}x{{ else }}empty{{ end }}", {"L": []}) == "empty"
    assert render("{{ range .Missing }}x{{ else }}none{{ end }}", {}) == "none"  # nil ranges zero times
    assert render("{{ range .L }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ if eq . 4 }}{{ break }}{{ end }}{{ . }}"
                  "{{ end }}", {"L": [1, 2, 3, 4, 5]}) == "13"
    assert render("{{ range $k, $v := .M }}{{ $k }}={{ $v }};{{ end }}", {"M": {"b": 2, "a": 1}}) == "a=1;b=2;"


def test_variables_scope_and_assignment():
    # assignment inside if/range reaches the outer variable; a declaration inside ends at {{ end }}
    src = ('{{ $s := "" }}{{ range .L }}{{ $s = printf "%s%s" $s . }}{{ $t := "inner" }}{{ end }}{{ $s }}'
           '{{ if true }}{{ $s := "shadow" }}{{ $s }}{{ end }}-{{ $s }}')
    assert render(src, {"L": ["a", "b", "c"]}) == "abcshadow-abc"
    with pytest.raises(GoTemplateError, match="undefined variable"):
        render("{{ if true }}{{ $v := 1 }}{{ end }}{{ $v }}")
    with pytest.raises(GoTemplateError, match="undefined variable"):
        render("{{ $nope = 1 }}")


def test_with_sets_dot():
    assert render("{{ with .A }}<{{ .B }}>{{ else }}no{{ end }}", {"A": {"B": "x"}}) == "<x>"
    assert render("{{ with .A }}<{{ .B }}>{{ else }}no{{ end }}", {"A": None}) == "no"


def test_functions():
    assert render('{{ eq .R "a" "b" }} {{ eq .R "c" }} {{ ne 1 2 }} {{ not "" }}', {"R": "b"}) == "true false true true"
    assert render('{{ and 1 "" 2 }}|{{ and 1 2 }}|{{ or "" 0 "x" }}|{{ or "" 0 }}') == "|2|x|0"
    assert render("{{ and .Nil .Nil.Field }}", {"Nil": None}) == "<no value>"  # short-circuit: .Nil.Field never runs
    assert render('{{ len "é" }} {{ len .L }} {{ index .L 1 }} {{ slice .L 1 }} {{ slice "abc" 1 2 }}',
                  {"L": [1, 2, 3]}) == "2 3 2 [2 3] b"
    assert render('{{ lt 1 2 }} {{ ge "b" "a" }} {{ printf "%s=%q %5s|%-3d|%%" "k" "v" "r" 7 }}') == \
        'true true k="v"     r|7  |%'
    assert render('{{ print "a" 1 2 "b" }}{{ json .M }}', {"M": {"a": "<b>"}}) == 'a1 2b{"a":"\\u003cb\\u003e"}'


@pytest.mark.parametrize("src, data, match", [
    ("{{ .X", {}, "unclosed action"),
    ("{{ if .X }}a", {}, "missing {{end}}"),
    ("a{{ end }}", {}, "unexpected {{end}}"),
    ('{{ eq "1" 1 }}', {}, "incompatible types"),
    ("{{ .M.Nope }}", {"M": Struct(Role="user")}, "can't evaluate field Nope"),
    ("{{ nope 1 }}", {}, 'function "nope" not defined'),
    ('{{ template "x" }}', {}, "not supported"),
    ("{{ .X 1 }}", {"X": 1}, "non-function"),
    ("{{ break }}", {}, "outside range"),
])
def test_errors(src, data, match):
    with pytest.raises(GoTemplateError, match=match):
        render(src, data)


def test_ollama_chatml_template_renders_as_ollama_does():
    """Ollama's own template/chatml.gotmpl, byte for byte."""
    src = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n")
    got = render(src, {"Messages": msgs(("system", "S"), ("user", "hi"))})
    assert got == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_content_is_never_interpreted_and_go_quote_round_trips():
    tricky = 'x {{ .System }} "q" \\ \t\n\u200b é 🙂'
    assert render("{{ .Content }}", {"Content": tricky}) == tricky
    assert render("{{ " + go_quote(tricky) + " }}") == tricky
    assert GoTemplate("{{ $.Messages }}{{ range .Messages }}{{ .Role }}{{ end }}").identifiers() >= {"messages", "role"}
