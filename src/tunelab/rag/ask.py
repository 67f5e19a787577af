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
   answer cites ([n] markers).

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


@dataclass
class Answer:
    question: str
    text: str
    hits: list[Hit] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)

    @property
    def cited(self) -> list[int]:
        """Passage numbers the answer cites, in order of first mention, only valid ones."""
        seen: list[int] = []
        for m in re.finditer(r"\[(\d+)\]", self.text):
            n = int(m.group(1))
            if 1 <= n <= len(self.hits) and n not in seen:
                seen.append(n)
        return seen

    def sources(self) -> list[str]:
        """`[n] source § section (similarity 0.71)` for every retrieved passage."""
        return [f"[{h.rank}] {h.cite()} (similarity {h.similarity:.2f})" for h in self.hits]

    def format(self) -> str:
        lines = [self.text.strip() or "(empty answer)", "", "Sources:"]
        lines += self.sources() or ["(none)"]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"question": self.question, "answer": self.text, "cited": self.cited,
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
        max_new_tokens: int = 256, temperature: float = 0.0) -> Answer:
    """Retrieve, prompt, generate; see the module docstring."""
    if run is not None and model is not None:
        raise TunelabError("give either a run or a model, not both", where="rag ask")
    hits = query(kb, question, k=k, cutoff=cutoff, hybrid=hybrid, directory=directory)
    messages = build_messages(question, hits, run_prompt(run))
    gen = generator if generator is not None else load_generator(run, model)
    text = gen.reply(messages, max_new_tokens=max_new_tokens, temperature=temperature)
    return Answer(question, text, hits, messages)
