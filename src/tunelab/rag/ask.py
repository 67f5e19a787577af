"""Answer a question from a knowledge base with numbered citations: `ask(kb, question, run=...)`.

1. retrieve the top `k` chunks (`tunelab.rag.retrieve.query`);
2. build one user message holding the numbered passages and the question. The prompt comes
   from the run's template when it has a context slot (`template.json` -> `extra.rag_prompt`,
   a string with `{context}` and `{question}`), else `DEFAULT_PROMPT`; the run's own system
   prompt (its persona) is left to the run's chat template;
3. generate with `tunelab.infer.generate.Generator` (a run directory, a model name, or any
   object with `reply(messages, max_new_tokens=..., temperature=...) -> str` passed as
   `generator`, which is how tests inject a fake);
4. return an `Answer`: the text, the passages as numbered sources, and which of them the
   answer cites ([n] markers). Citations are checked (`check_citations`): a marker naming no
   passage (`[9]` with 3 passages) is removed from the text and listed in `invalid_citations`;
   when the answer cites no passage at all, a `Sources: [1] file § section; [2] ...` line naming
   every passage the model was given is appended (`sources_line`). `cited_by` says which
   happened: "model" (the model cited by itself), "added" (tunelab added the line) or "none"
   (no passage was retrieved, so there is nothing to cite).

A citation is `[n]`, `[n, m]` or `[n][m]` not glued to a word or a closing bracket, so code such
as `a[7]` or `m[1][2]` is never read (or rewritten) as a citation.

Raises:
    TunelabError: unknown KB, unreadable run, or a prompt template missing a slot.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.rag.retrieve import Hit, query

DEFAULT_PROMPT = (
    "Answer the question using the numbered context passages below. Cite the passages you use "
    "with their numbers in square brackets, like [1]. If the passages do not contain the answer, "
    "say that you do not know.\n\nContext:\n{context}\n\nQuestion: {question}"
)
NO_CONTEXT = "(no passage of the knowledge base matched the question)"


# a run of [n] / [n, m] groups, not glued to a word, `)` or `]` (so `a[7]`, `m[1][2]` are code, not citations)
_CITE = re.compile(r"(?<![\w)\]])((?:\[\s*\d+(?:\s*,\s*\d+)*\s*\])+)")


def check_citations(text: str, n_passages: int) -> tuple[str, list[int], list[int]]:
    """(text without out-of-range markers, valid passage numbers cited in order of first mention,
    out-of-range numbers). `[1, 9]` with 3 passages becomes `[1]`; a lone `[9]` goes with the
    space before it."""
    valid: list[int] = []
    invalid: list[int] = []

    def fix(m: re.Match) -> str:
        groups = re.findall(r"\[([^\]]*)\]", m.group(1))
        kept_groups = []
        for g in groups:
            nums = [int(x) for x in re.findall(r"\d+", g)]
            good = [n for n in nums if 1 <= n <= n_passages]
            for n in nums:
                target = valid if n in good else invalid
                if n not in target:
                    target.append(n)
            if good:
                kept_groups.append(g if len(good) == len(nums) else ", ".join(map(str, good)))
        return "".join(f"[{g}]" for g in kept_groups)

    out = []
    pos = 0
    for m in _CITE.finditer(text):
        rep = fix(m)
        start, end = m.start(), m.end()
        if not rep:  # the whole marker goes, with the blanks before it (after it at a line's start)
            while start > pos and text[start - 1] in " \t":
                start -= 1
            if start == 0 or text[start - 1] == "\n":
                while end < len(text) and text[end] in " \t":
                    end += 1
        out.append(text[pos:start] + rep)
        pos = end
    out.append(text[pos:])
    return "".join(out), valid, invalid


def sources_line(passages) -> str:
    """`Sources: [1] guide.md § Roses; [2] notes.txt` for passages with `rank`/`index`, `source`, `section`."""
    parts = []
    for p in passages:
        n = getattr(p, "rank", None) or getattr(p, "index", None)
        parts.append(f"[{n}] {p.source} § {p.section}" if p.section else f"[{n}] {p.source}")
    return "Sources: " + "; ".join(parts)


def cite_or_add_sources(text: str, passages) -> tuple[str, list[int], list[int], str]:
    """(text as shown, valid citations, out-of-range citations, cited_by): out-of-range markers
    removed; a `sources_line` appended when no passage is cited (cited_by "added"), "model" when
    the text cites one, "none" when there are no passages."""
    passages = list(passages)
    clean, valid, invalid = check_citations(text, len(passages))
    if not passages:
        return clean, valid, invalid, "none"
    if valid:
        return clean, valid, invalid, "model"
    body = clean.rstrip()
    return (body + "\n\n" if body else "") + sources_line(passages), valid, invalid, "added"


@dataclass
class Answer:
    """`Answer(question, reply, hits, messages)`: the model's `reply` is kept in `raw`; `text` is
    what to show (out-of-range markers removed, a Sources line added when nothing is cited)."""

    question: str
    text: str
    hits: list[Hit] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    raw: str = field(init=False, default="")
    cited: list[int] = field(init=False, default_factory=list)  # valid [n], in order of first mention
    invalid_citations: list[int] = field(init=False, default_factory=list)  # [n] naming no passage
    cited_by: str = field(init=False, default="none")  # "model" | "added" | "none"

    def __post_init__(self):
        self.raw = self.text
        self.text, self.cited, self.invalid_citations, self.cited_by = cite_or_add_sources(self.raw, self.hits)

    def sources(self) -> list[str]:
        """`[n] source § section (similarity 0.71)` for every retrieved passage."""
        return [f"[{h.rank}] {h.cite()} (similarity {h.similarity:.2f})" for h in self.hits]

    def format(self) -> str:
        """The answer, then `Sources:` with every passage and its similarity. When tunelab added
        the sources (the answer cited none), the added one-line form is replaced by this list."""
        body = self.text
        if self.cited_by == "added":
            body = body[: body.rfind("Sources: ")].rstrip()
        head = "Sources (the answer cites none; all passages given to the model):" \
            if self.cited_by == "added" else "Sources:"
        lines = [body.strip() or "(empty answer)", "", head]
        lines += self.sources() or ["(none)"]
        if self.invalid_citations:
            lines.append("(removed citations of passages that do not exist: "
                         + ", ".join(f"[{n}]" for n in self.invalid_citations) + ")")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"question": self.question, "answer": self.text, "cited": self.cited, "cited_by": self.cited_by,
                "invalid_citations": self.invalid_citations, "raw_answer": self.raw,
                "sources": [h.to_dict() for h in self.hits]}


def format_context(hits: list[Hit]) -> str:
    """Numbered passages: `[n] source § section` on one line, the chunk text below."""
    if not hits:
        return NO_CONTEXT
    return "\n\n".join(f"[{h.rank}] {h.cite()}\n{h.text.strip()}" for h in hits)


def build_messages(question: str, hits: list[Hit], prompt: str | None = None) -> list[dict]:
    """The chat messages sent to the model (OpenAI format); `prompt` needs {context} and {question}."""
    prompt = prompt or DEFAULT_PROMPT
    for slot in ("{context}", "{question}"):
        if slot not in prompt:
            raise TunelabError(f"RAG prompt template has no {slot} slot", where="template.extra.rag_prompt")
    content = prompt.replace("{context}", format_context(hits)).replace("{question}", question.strip())
    return [{"role": "user", "content": content}]


def run_prompt(run: str | Path | None) -> str | None:
    """The run's RAG prompt (`template.json` -> extra.rag_prompt), or None for the default."""
    if run is None:
        return None
    from tunelab.runs.rundir import RunDir

    tpl = RunDir(run).template_path
    if not tpl.exists():
        return None
    try:
        extra = json.loads(tpl.read_text()).get("extra") or {}
    except (OSError, json.JSONDecodeError) as e:
        raise TunelabError(f"unreadable template ({e})", where=str(tpl)) from e
    return extra.get("rag_prompt") if isinstance(extra, dict) else None


def load_generator(run: str | Path | None = None, model: str | None = None):
    """A `Generator` for the run (base + adapter + template) or the model (default SmolLM2 instruct)."""
    from tunelab.infer.generate import Generator  # lazy: torch model loading only when asking

    if run is not None:
        if not Path(run).is_dir():
            raise TunelabError("no such run directory", where=str(run))
        return Generator.from_run(run)
    return Generator.from_model(model or "smollm2-135m-instruct")


def ask(kb, question: str, *, run: str | Path | None = None, model: str | None = None, generator=None,
        k: int = 3, cutoff: float | None = None, hybrid: bool = False, directory=None,
        max_new_tokens: int = 256, temperature: float = 0.0, rewriter=None) -> Answer:
    """Retrieve (after `rewriter`, a tunelab.rag.rewrite.QueryRewriter, when given), prompt, generate; see the
    module docstring."""
    if run is not None and model is not None:
        raise TunelabError("give either a run or a model, not both", where="rag ask")
    if rewriter is not None:
        hits = rewriter.query(kb, question, k=k, cutoff=cutoff, hybrid=hybrid, directory=directory)
    else:
        hits = query(kb, question, k=k, cutoff=cutoff, hybrid=hybrid, directory=directory)
    messages = build_messages(question, hits, run_prompt(run))
    gen = generator if generator is not None else load_generator(run, model)
    text = gen.reply(messages, max_new_tokens=max_new_tokens, temperature=temperature)
    return Answer(question, text, hits, messages)
