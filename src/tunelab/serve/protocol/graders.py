"""`/v1/fine_tuning/alpha/graders/run` and `/validate`: requests and responses in OpenAI's shapes
(openai-python's types/fine_tuning/alpha/: GraderRunParams, GraderRunResponse, GraderValidateResponse).

    run       {grader, model_sample: str, item?: object}  ->  {reward, metadata, sub_rewards,
                                                              model_grader_token_usage_per_model}
    validate  {grader}                                    ->  {grader}

The grader object itself is checked by train/graders' validate_grader (its message, a 400); the body's
own keys here: one outside these is a 400 naming it. The typed grader models below are the OpenAPI
schema's description of `grader` (what the server runs, in openai-python's field names); the request
keeps the grader as the dict it came as, for validate_grader's messages.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema, model_validator

from tunelab.serve.errors import APIError
from tunelab.serve.protocol.common import Response


# ---- the grader objects, as the schema describes them ----------------------------------------------------
class _Grader(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class StringCheckGrader(_Grader):
    type: Literal["string_check"]
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]


class TextSimilarityGrader(_Grader):
    type: Literal["text_similarity"]
    input: str
    reference: str
    evaluation_metric: Literal["fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5",
                               "rouge_l", "cosine"]


class PythonGrader(_Grader):
    type: Literal["python"]
    source: str  # defines grade(sample, item) -> float


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["input_text", "output_text"]
    text: str


class GraderMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant", "system", "developer"]
    content: str | TextPart | list[str | TextPart]
    type: Literal["message"] | None = None


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_completions_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    reasoning_effort: str | None = None


class ScoreModelGrader(_Grader):
    type: Literal["score_model"]
    model: str
    input: list[GraderMessage] = Field(min_length=1)
    range: list[float] | None = Field(None, min_length=2, max_length=2)
    sampling_params: SamplingParams | None = None


SubGrader = Union[StringCheckGrader, TextSimilarityGrader, PythonGrader, ScoreModelGrader]


class MultiGrader(_Grader):
    type: Literal["multi"]
    graders: dict[str, SubGrader]
    calculate_output: str  # + - * / ^, min max abs floor ceil exp sqrt log over the graders' names


def _inline(node, defs: dict):
    """`node` with every {"$ref": "#/$defs/X"} replaced by defs[X] (a field's schema has no $defs of its own)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _grader_schema() -> dict:
    schema = TypeAdapter(Union[StringCheckGrader, TextSimilarityGrader, PythonGrader, ScoreModelGrader,
                               MultiGrader]).json_schema()
    return _inline(schema, schema.get("$defs", {}))


GraderObject = Annotated[dict[str, Any], WithJsonSchema(_grader_schema())]


# ---- requests and responses --------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")
    FIELDS: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data):
        if not isinstance(data, dict):
            raise APIError(400, "the request body must be a JSON object", code="invalid_body")
        unknown = [k for k in data if k not in cls.model_fields]
        if unknown:
            raise APIError(400, f"unknown parameter(s): {', '.join(unknown)}", param=unknown[0],
                           code="unknown_parameter")
        if not isinstance(data.get("grader"), dict):
            raise APIError(400, "'grader' must be a grader object {type, name, ...}", param="grader",
                           code="invalid_value" if "grader" in data else "missing_required_parameter")
        return data


class GraderValidateRequest(_Body):
    grader: GraderObject


class GraderRunRequest(_Body):
    grader: GraderObject
    model_sample: str
    item: Any = None

    @model_validator(mode="after")
    def _item(self):
        if self.item is not None and not isinstance(self.item, dict):
            raise APIError(400, "'item' must be an object (the dataset row the templates read)", param="item",
                           code="invalid_value")
        return self


class GraderErrors(Response):
    formula_parse_error: bool = False
    invalid_variable_error: bool = False
    model_grader_parse_error: bool = False
    model_grader_refusal_error: bool = False
    model_grader_server_error: bool = False
    model_grader_server_error_details: str | None = None
    other_error: bool = False
    python_grader_runtime_error: bool = False
    python_grader_runtime_error_details: str | None = None
    python_grader_server_error: bool = False
    python_grader_server_error_type: str | None = None
    sample_parse_error: bool = False
    truncated_observation_error: bool = False
    unresponsive_reward_error: bool = False


class GraderRunMetadata(Response):
    errors: GraderErrors
    execution_time: float  # seconds
    name: str
    sampled_model_name: str | None = None
    scores: dict[str, Any]
    token_usage: int | None = None  # total tokens of the model graders
    type: str


class GraderRunResponse(Response):
    reward: float
    metadata: GraderRunMetadata
    sub_rewards: dict[str, Any]
    model_grader_token_usage_per_model: dict[str, Any]


class GraderValidateResponse(Response):
    grader: GraderObject | None = None
