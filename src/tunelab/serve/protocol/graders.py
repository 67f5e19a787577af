"""`/v1/fine_tuning/alpha/graders/run` and `/validate`: requests and responses in OpenAI's shapes
(openai-python's types/fine_tuning/alpha/: GraderRunParams, GraderRunResponse, GraderValidateResponse).

    run       {grader, model_sample: str, item?: object}  ->  {reward, metadata, sub_rewards,
                                                              model_grader_token_usage_per_model}
    validate  {grader}                                    ->  {grader}

The grader object itself is checked by train/graders' validate_grader (its message, a 400); the body's
own keys here: one outside these is a 400 naming it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from tunelab.serve.errors import APIError
from tunelab.serve.protocol.common import Response


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
    grader: dict[str, Any]


class GraderRunRequest(_Body):
    grader: dict[str, Any]
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
    grader: dict[str, Any] | None = None
