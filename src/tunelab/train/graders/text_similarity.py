"""`text_similarity`: the filled `input` scored against the filled `reference` by `evaluation_metric`.

fuzzy_match, bleu, gleu, rouge_1..rouge_5, rouge_l: graders/similarity_metrics.py (the formulas are
there). cosine: dot product of the two texts' unit vectors from the injected embedder (GradeContext.embed:
all-MiniLM-L6-v2 mean-pooled, as rag/embed.py), in [-1, 1]; one embedding call per batch.
meteor is refused when the grader is validated: METEOR matches stems and WordNet synonyms, and WordNet's
data is not available offline.
"""

from __future__ import annotations

from tunelab.errors import TunelabError
from tunelab.train.graders.base import Graded, check_fields, need_str
from tunelab.train.graders.similarity_metrics import METRICS
from tunelab.train.graders.template import GradeFailure, check_template, fill

REFUSED = {"meteor": "METEOR matches WordNet synonyms, and WordNet's data is not available offline"}
SUPPORTED = (*METRICS, "cosine")


class TextSimilarity:
    type = "text_similarity"
    required = ("type", "name", "input", "reference", "evaluation_metric")
    optional = ()

    def check(self, g: dict, where: str) -> None:
        check_fields(g, self.required, self.optional, where)
        for key in ("input", "reference"):
            check_template(need_str(g, key, where), f"{where}.{key}")
        metric = need_str(g, "evaluation_metric", where)
        if metric in REFUSED:
            raise TunelabError(f"evaluation_metric {metric} is not supported: {REFUSED[metric]}",
                               where=f"{where}.evaluation_metric", hint=f"supported: {', '.join(SUPPORTED)}")
        if metric not in SUPPORTED:
            raise TunelabError(f"unknown evaluation_metric {metric!r}", where=f"{where}.evaluation_metric",
                               hint=f"supported: {', '.join(SUPPORTED)}")

    def grade(self, g: dict, samples, items, ctx) -> list[Graded]:
        out: list[Graded | None] = []
        pairs: list[tuple[int, str, str]] = []  # (position, input, reference) of the filled ones
        for i, (s, item) in enumerate(zip(samples, items)):
            try:
                pairs.append((i, fill(g["input"], s, item), fill(g["reference"], s, item)))
                out.append(None)
            except GradeFailure as e:
                out.append(Graded.failed(e.flag, e.detail_key, e.detail))
        metric = g["evaluation_metric"]
        if metric == "cosine":
            if pairs:
                if ctx.embed is None:
                    raise TunelabError("text_similarity cosine needs an embedder", where="grader")
                vecs = ctx.embed([a for _, a, _ in pairs] + [b for _, _, b in pairs])
                n = len(pairs)
                for k, (i, _, _) in enumerate(pairs):
                    out[i] = Graded(float((vecs[k] * vecs[n + k]).sum()))
        else:
            fn = METRICS[metric]
            for i, a, b in pairs:
                out[i] = Graded(float(fn(a, b)))
        return out
