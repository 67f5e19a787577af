"""What every grader shares: the sample, one grade's result, the injected services, field checking.

A grader is a dict in OpenAI's shape (`openai.types.graders`): `{"type": ..., "name": ..., ...}`. Each
type is one `GraderType` object (graders/__init__.py's GRADERS): the fields it requires and accepts,
its own checks (`check`), and `grade(grader, samples, items, ctx) -> list[Graded]` over a batch (one
subprocess or one embedding call serves the whole batch).

A grade never raises for what the sample, the item or the grader's own code does: it scores 0 and sets
the OpenAI error flag that says why (`Graded.errors`, the names of GraderRunResponse.metadata.errors).
Only a grader dict that cannot run at all (bad fields: `validate_grader`) is a TunelabError.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from tunelab.errors import TunelabError

# metadata.errors of OpenAI's GraderRunResponse: every flag false unless a grade sets it
ERROR_FLAGS = ("formula_parse_error", "invalid_variable_error", "model_grader_parse_error",
               "model_grader_refusal_error", "model_grader_server_error", "other_error",
               "python_grader_runtime_error", "python_grader_server_error", "sample_parse_error",
               "truncated_observation_error", "unresponsive_reward_error")
# the flags' free-text companions
ERROR_DETAILS = ("model_grader_server_error_details", "python_grader_runtime_error_details",
                 "python_grader_server_error_type")


class _Unparsed:
    """output_json of a sample whose text is not JSON (a template reading it is a sample_parse_error)."""

    def __repr__(self) -> str:
        return "<not JSON>"


UNPARSED = _Unparsed()


@dataclass(frozen=True)
class Sample:
    """The `sample` namespace: the model's reply as text and, when the text parses, as JSON."""

    output_text: str
    output_json: object = UNPARSED

    @staticmethod
    def of(text: str) -> "Sample":
        try:
            return Sample(text, json.loads(text))
        except ValueError:
            return Sample(text)

    def as_dict(self) -> dict:
        """What a python grader's `sample` argument is (output_json None when the text is not JSON)."""
        return {"output_text": self.output_text,
                "output_json": None if self.output_json is UNPARSED else self.output_json,
                "output_tools": [], "choices": []}


@dataclass
class Graded:
    """One grade: the score, the error flags set (score 0 then), and what a multi grader or a model
    grader adds (sub-scores, token usage per model)."""

    score: float
    errors: dict[str, object] = field(default_factory=dict)  # flag -> True, detail -> text
    sub: dict[str, float] = field(default_factory=dict)
    token_usage: dict[str, dict] = field(default_factory=dict)  # model -> {prompt_tokens, completion_tokens, ...}
    sampled_model_name: str | None = None

    @staticmethod
    def failed(flag: str, detail_key: str | None = None, detail: str | None = None) -> "Graded":
        errors: dict[str, object] = {flag: True}
        if detail_key:
            errors[detail_key] = detail
        return Graded(0.0, errors)

    @property
    def ok(self) -> bool:
        return not any(v is True for v in self.errors.values())


@dataclass
class GradeContext:
    """Services a grader may need, injected by the caller so the graders import nothing above train/:

    embed(texts) -> unit vectors (n, dim)   text_similarity cosine (the server passes rag's MiniLM;
                                             the default is graders/embedding.py's, same recipe)
    client() -> openai.OpenAI               score_model's endpoint (default: the openai client from
                                             OPENAI_BASE_URL / OPENAI_API_KEY, any compatible server)
    python_timeout_s                        a python grader's limit per grade
    """

    embed: Callable | None = None
    client: Callable | None = None
    python_timeout_s: float = 10.0


def finite(x) -> float | None:
    """x as a float when it is a finite real number (bool excluded), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def check_fields(grader: dict, required: tuple[str, ...], optional: tuple[str, ...], where: str,
                 unsupported: dict[str, str] | None = None) -> None:
    """Missing required fields, then fields the type does not have (or that we refuse: `unsupported`
    name -> why), each named in one TunelabError."""
    missing = [k for k in required if k not in grader]
    if missing:
        raise TunelabError(f"{grader.get('type')} grader is missing {', '.join(missing)}", where=where)
    unsupported = unsupported or {}
    refused = [k for k in grader if k in unsupported and grader[k] is not None]
    if refused:
        raise TunelabError(f"unsupported field(s) {', '.join(refused)}: "
                           + "; ".join(f"{k}: {unsupported[k]}" for k in refused), where=where)
    known = set(required) | set(optional) | set(unsupported)
    unknown = [k for k in grader if k not in known]
    if unknown:
        raise TunelabError(f"unknown field(s) {', '.join(map(str, unknown))} for a {grader.get('type')} grader",
                           where=where, hint=f"its fields: {', '.join(required + optional)}")


def need_str(grader: dict, key: str, where: str) -> str:
    v = grader.get(key)
    if not isinstance(v, str):
        raise TunelabError(f"{key} must be a string, not {type(v).__name__}", where=f"{where}.{key}")
    return v
