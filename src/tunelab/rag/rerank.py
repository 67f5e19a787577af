"""A reranker stage: a small chat LLM judges each candidate, through `query(..., reranker=...)`.

`LLMReranker.load("smollm2-135m-instruct")(question, hits)` scores every candidate (retrieve.py
passes 4 x k of them) with one forward pass of the prompt

    user:       Passage: <chunk text, first `max_passage_tokens` tokens>
                Question: <question>
                Does the passage answer the question? Answer yes or no.
    assistant:  (generation prompt; the next token is read)

    llm(h)   = log P(yes) = log sum over the "yes" spellings (yes, Yes, " yes", " Yes"; their first
               token where a small vocabulary splits them) of softmax(logits at the last prompt token)
    score(h) = (1 - mix) * z(retrieval score) + mix * z(llm)      (z = standardised over the candidates)

`mix` = 1 (default) ranks by the model alone; a smaller `mix` keeps part of the retrieval order.
Only the first `top` (12 = 4 x the default k) candidates are judged; any others follow them in
their retrieval order.
Candidates are scored in padded batches of `batch_size`, under bf16 autocast where the CPU does
bf16 matmuls natively. A model without a chat template gets the prompt as plain text. Scores are
cached per (model, passage cut, question, chunk id) for the process, so re-ranking the same candidates is free.
"""

from __future__ import annotations

import functools
import math

from tunelab.errors import TunelabError

YES = ("yes", "Yes", " yes", " Yes")
_SCORES: dict[tuple, dict[tuple[str, str], float]] = {}
PROMPT = "Passage: {passage}\n\nQuestion: {question}\n\nDoes the passage answer the question? Answer yes or no."


class LLMReranker:
    """Callable reranker (see the module docstring). Args: a causal LM, its tokenizer, `mix`,
    `max_passage_tokens` (passage cut), `batch_size`, `top` (candidates judged)."""

    def __init__(self, model, tokenizer, *, mix: float = 1.0, max_passage_tokens: int = 192,
                 batch_size: int = 8, top: int = 12, name: str = ""):
        if not 0.0 <= mix <= 1.0:
            raise TunelabError(f"rerank mix must be in [0, 1], got {mix}", where="rerank.mix")
        self.model = model.eval()
        self.tok = tokenizer
        self.mix = mix
        self.max_passage_tokens = max_passage_tokens
        self.batch_size = batch_size
        self.top = top
        self.name = name
        # the token that starts each spelling (the whole word in SmolLM2's vocabulary)
        ids = {t[0] for t in (tokenizer.encode(y, add_special_tokens=False) for y in YES) if t}
        if not ids:
            raise TunelabError(f"the tokenizer of {name!r} has no single token for 'yes'", where="rerank")
        self.yes_ids = sorted(ids)
        # shared by the rerankers of one model and passage cut (e.g. several `mix` values)
        self.cache: dict[tuple[str, str], float] = _SCORES.setdefault((name or id(model), max_passage_tokens), {})

    @staticmethod
    def load(name: str = "smollm2-135m-instruct", **kw) -> "LLMReranker":
        """The reranker on model `name` (alias, folder or hub id), loaded once per process."""
        model, tok = _load_lm(name)
        return LLMReranker(model, tok, name=name, **kw)

    # ------------------------------------------------------------ scoring
    def prompt(self, question: str, passage: str) -> str:
        ids = self.tok.encode(passage, add_special_tokens=False)[: self.max_passage_tokens]
        user = PROMPT.format(passage=self.tok.decode(ids), question=question)
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                                add_generation_prompt=True)
        return user + "\nAnswer:"

    def log_p_yes(self, question: str, passages: list[str]) -> list[float]:
        """log P(yes) of each passage for `question` (module docstring), in order."""
        import torch

        from tunelab.runtime.precision import cpu_has_bf16

        out: list[float] = []
        auto = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_has_bf16())
        side = self.tok.padding_side
        self.tok.padding_side = "right"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        try:
            with torch.inference_mode(), auto:
                for b in range(0, len(passages), self.batch_size):
                    texts = [self.prompt(question, p) for p in passages[b:b + self.batch_size]]
                    enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                    logits = self.model(**enc).logits.float()  # (batch, seq, vocab)
                    last = enc["attention_mask"].sum(1) - 1  # right padding: last real token
                    logp = torch.log_softmax(logits[torch.arange(len(texts)), last], dim=-1)
                    out.extend(torch.logsumexp(logp[:, self.yes_ids], dim=-1).tolist())
        finally:
            self.tok.padding_side = side
        return out

    def __call__(self, question: str, hits: list) -> list:
        hits, rest = list(hits[: self.top]), list(hits[self.top:])
        todo = [h for h in hits if (question, h.id or h.text) not in self.cache]
        if todo:
            for h, s in zip(todo, self.log_p_yes(question, [h.text for h in todo])):
                self.cache[(question, h.id or h.text)] = s
        llm = [self.cache[(question, h.id or h.text)] for h in hits]
        ret = [h.score for h in hits]
        zl, zr = _z(llm), _z(ret)
        for h, a, b in zip(hits, zl, zr):
            h.score = self.mix * a + (1 - self.mix) * b
        return sorted(hits, key=lambda h: -h.score) + rest


def _z(xs: list[float]) -> list[float]:
    """(x - mean) / std over the list; all zeros when the list is constant."""
    if not xs:
        return []
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))
    return [(x - m) / sd if sd > 1e-12 else 0.0 for x in xs]


@functools.lru_cache(maxsize=2)
def _load_lm(name: str):
    from transformers import AutoModelForCausalLM

    from tunelab.rag.embed import load_pretrained

    tok, model = load_pretrained(AutoModelForCausalLM, name, "reranker", "--rerank", "smollm2-135m-instruct")
    return model, tok
