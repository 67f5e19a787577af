"""OpenAI's graders, run locally: one object per grader type in GRADERS (type -> GraderType).

    string_check     eq | ne | like | ilike                         graders/string_check.py
    text_similarity  fuzzy_match, bleu, gleu, rouge_1..5, rouge_l, cosine (meteor refused)
    score_model      an LLM judge through any OpenAI-compatible endpoint
    python           def grade(sample, item) -> float, in a child process with a time limit, no network
    multi            {name: grader} combined by calculate_output

    validate_grader(grader, where)                       TunelabError naming a bad / unknown field
    run_grader(grader, texts, items, ctx) -> [Graded]    one Graded per (sample text, item)

The shapes and field names are openai-python's (`openai.types.graders`); label_model is not built
(refused by name). Templates: graders/template.py. A grade never raises for what a sample, an item or
the grader's own code does: it scores 0 with the OpenAI error flag set (graders/base.py).
"""

from __future__ import annotations

from tunelab.errors import TunelabError
from tunelab.train.graders.base import ERROR_DETAILS, ERROR_FLAGS, GradeContext, Graded, Sample
from tunelab.train.graders.multi import Multi
from tunelab.train.graders.python_grader import PythonGrader
from tunelab.train.graders.score_model import ScoreModel
from tunelab.train.graders.string_check import StringCheck
from tunelab.train.graders.text_similarity import TextSimilarity

GRADERS: dict = {g.type: g for g in (StringCheck(), TextSimilarity(), ScoreModel(), PythonGrader())}
GRADERS["multi"] = Multi(GRADERS)
JUDGE_TIMEOUT_S = 120.0  # a score_model request, then the openai client's own retries
NOT_BUILT = {"label_model": "label_model graders are not supported (use score_model, or string_check on a label)"}

__all__ = ["ERROR_DETAILS", "ERROR_FLAGS", "GRADERS", "GradeContext", "Graded", "Sample", "default_context",
           "run_grader", "validate_grader"]


def openai_client():
    """The `openai` client as its environment configures it (OPENAI_BASE_URL, OPENAI_API_KEY)."""
    try:
        import openai
    except ImportError:
        raise TunelabError("score_model graders need the openai package", where="grader",
                           hint="pip install openai") from None
    return openai.OpenAI(timeout=JUDGE_TIMEOUT_S)


def default_context(python_timeout_s: float = 10.0) -> GradeContext:
    """Services for graders outside the server: graders/embedding.py's MiniLM for cosine, the openai client
    from the environment for score_model (each loaded on first use)."""
    from tunelab.train.graders import embedding

    return GradeContext(embed=embedding.encode, client=openai_client, python_timeout_s=python_timeout_s)


def validate_grader(grader: dict, where: str = "grader") -> None:
    """A TunelabError (one line) naming the first problem of an OpenAI grader dict: not an object, an
    unknown or unsupported type, a missing / unknown / unsupported field, a bad template, operation,
    metric, range or formula; None when the grader can run."""
    if not isinstance(grader, dict):
        raise TunelabError(f"a grader is an object with a type, not {type(grader).__name__}", where=where)
    kind = grader.get("type")
    if not isinstance(kind, str):
        raise TunelabError(f"type must be one of {', '.join(GRADERS)}", where=f"{where}.type")
    if kind in NOT_BUILT:
        raise TunelabError(NOT_BUILT[kind], where=f"{where}.type")
    if kind not in GRADERS:
        raise TunelabError(f"unknown grader type {kind!r}", where=f"{where}.type", hint=f"one of {', '.join(GRADERS)}")
    if not isinstance(grader.get("name", ""), str):
        raise TunelabError("name must be a string", where=f"{where}.name")
    GRADERS[kind].check(grader, where)


def run_grader(grader: dict, texts: list[str], items: list[dict], ctx: GradeContext | None = None) -> list[Graded]:
    """Grade each sample text against its item (the grader validated first: TunelabError when it cannot run)."""
    validate_grader(grader)
    samples = [Sample.of(t) for t in texts]
    return GRADERS[grader["type"]].grade(grader, samples, [i if isinstance(i, dict) else {} for i in items],
                                         ctx or default_context())
