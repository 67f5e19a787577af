"""`/v1/fine_tuning/jobs`: the create request, the job, its events and checkpoints, in OpenAI's shapes.

The create request is checked here, in the order below, each refusal a 400 with its own message
(the model raises APIError itself, so the messages are the server's, not pydantic's):

    the body            a JSON object; no key outside FIELDS; `integrations` empty
    model               a non-empty string (whether it names a model is the serving class's 404)
    method              {type: supervised | dpo | reinforcement, <type>: {hyperparameters}}; reinforcement's
                        object also holds `grader` (an OpenAI grader object, checked by train/graders)
    hyperparameters     an object: the method's names of HYPER (serve/job_methods.py; "auto" = tunelab's
                        default), each in range; a name the method takes one value of only (reinforcement's
                        eval_samples, reasoning_effort) refused, saying why, at any other value
    training_file,      non-empty strings (whether the tenant has them, and what they hold, is checked
    validation_file     by the serving class)
    suffix              a NAME of at most 40 characters
    seed                0 .. 2**31 - 1; metadata: at most 16 string pairs

The method's hyperparameters win over the top-level ones (`resolved_hyperparameters`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from tunelab.config import PreferenceConfig, TrainConfig
from tunelab.errors import TunelabError
from tunelab.serve.errors import APIError
from tunelab.serve.job_methods import COMMON, METHODS
from tunelab.serve.names import check_name
from tunelab.serve.protocol.common import Page, Response

FIELDS = ("model", "training_file", "validation_file", "hyperparameters", "method", "suffix", "seed", "metadata",
          "integrations")
FINETUNING_TYPES = ("lora", "qlora", "full")  # method.name of the job's run (a method may take fewer)
# name: (kind, low (exclusive for floats), high, auto); a str kind: (str, choices, None, auto)
HYPER = {"n_epochs": (int, 1, 100, lambda: int(TrainConfig.model_fields["epochs"].default)),
         "batch_size": (int, 1, 1024, lambda: TrainConfig.model_fields["batch_size"].default),
         "learning_rate_multiplier": (float, 0.0, 100.0, lambda: 1.0),
         "beta": (float, 0.0, 10.0, lambda: PreferenceConfig.model_fields["beta"].default),
         "finetuning_type": (str, FINETUNING_TYPES, None, lambda: "lora"),
         "compute_multiplier": (float, 0.0, 10.0, lambda: 1.0),  # reinforcement: G = max(2, round(4 x it))
         "eval_interval": (int, 1, 10**6, lambda: "auto"),  # reinforcement: train.eval_every (job_methods)
         "eval_samples": (int, 1, 10**6, lambda: "auto"),
         "reasoning_effort": (str, ("default", "low", "medium", "high"), None, lambda: "default")}
KINDS = {name: m.kinds for name, m in METHODS.items()}  # method type: the file kinds it trains on
KIND_TEXT = {name: m.kind_text for name, m in METHODS.items()}
JobStatus = Literal["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"]


def bad(message: str, param: str | None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def check_hyperparameters(given, method: str) -> dict:
    """`given` with each value checked ("auto" kept); 400 naming `hyperparameters.<key>` otherwise."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise bad("hyperparameters must be an object", "hyperparameters")
    spec = METHODS[method]
    for key in given:
        if key not in spec.hyper:
            raise bad(f"unknown hyperparameter '{key}' for method {method}: use {', '.join(spec.hyper)}",
                      f"hyperparameters.{key}")
    out = {}
    for key, value in given.items():
        kind, lo, hi, _ = HYPER[key]
        if key in spec.fixed:
            want, why = spec.fixed[key]
            if value not in ("auto", want):
                raise bad(f"hyperparameter {key}={value!r} is not supported for method {method}: {why}; "
                          f"leave it out or use '{want}'", f"hyperparameters.{key}", "unsupported_value")
            out[key] = want
        elif value == "auto":
            out[key] = value
        elif kind is str:
            choices = spec.finetuning_types if key == "finetuning_type" else lo
            if value not in choices:
                why = f" (method {method} trains {' or '.join(choices)})" if key == "finetuning_type" else ""
                raise bad(f"invalid hyperparameter {key}={value!r}: use 'auto' or one of {', '.join(choices)}{why}",
                          f"hyperparameters.{key}")
            out[key] = value
        else:
            number = isinstance(value, int) if kind is int else isinstance(value, (int, float))
            ok = number and not isinstance(value, bool)
            if not ok or not ((lo <= value <= hi) if kind is int else (lo < value <= hi)):
                span = f"an integer in {lo}..{hi}" if kind is int else f"a number in ({lo:g}, {hi:g}]"
                raise bad(f"invalid hyperparameter {key}={value!r}: use 'auto' or {span}", f"hyperparameters.{key}")
            out[key] = kind(value)
    return out


def hyperparameters(given, method: str) -> dict:
    """Every hyperparameter of `method`, checked, "auto" resolved to tunelab's default."""
    given = check_hyperparameters(given, method)
    return {k: HYPER[k][3]() if given.get(k, "auto") == "auto" else given[k] for k in METHODS[method].hyper}


def check_grader(grader, where: str) -> dict:
    """An OpenAI grader object, checked by train/graders (unknown or unsupported fields named): 400 else,
    `param` the field the check names."""
    from tunelab.train.graders import validate_grader

    if not isinstance(grader, dict):
        raise bad("the grader must be an object (an OpenAI grader: string_check, text_similarity, python, "
                  "score_model or multi)", where)
    try:
        validate_grader(grader, where)
    except TunelabError as e:
        raise bad(e.one_line(), e.where or where, "invalid_grader") from None
    return grader


class Hyperparameters(BaseModel):
    """What a request gives ("auto" or a value); a job's resolved values are all numbers / names."""

    model_config = ConfigDict(extra="forbid")
    n_epochs: Literal["auto"] | int = "auto"
    batch_size: Literal["auto"] | int = "auto"
    learning_rate_multiplier: Literal["auto"] | float = "auto"
    beta: Literal["auto"] | float = "auto"  # dpo only
    finetuning_type: Literal["auto", "lora", "qlora", "full"] = "auto"
    compute_multiplier: Literal["auto"] | float = "auto"  # reinforcement only, as the next three
    eval_interval: Literal["auto"] | int = "auto"
    eval_samples: Literal["auto"] | int = "auto"
    reasoning_effort: Literal["auto", "default", "low", "medium", "high"] = "auto"

    def given(self) -> dict:
        return self.model_dump(include=self.model_fields_set)


class MethodParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters | None = None


class ReinforcementParams(MethodParams):
    grader: dict[str, Any]


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["supervised", "dpo", "reinforcement"] = "supervised"
    supervised: MethodParams | None = None
    dpo: MethodParams | None = None
    reinforcement: ReinforcementParams | None = None

    def params(self) -> MethodParams | None:
        return getattr(self, self.type)


class FineTuningJobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    integrations: list[Any] | None = None
    model: str
    method: Method = Method()
    hyperparameters: Hyperparameters | None = None
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _body(cls, body):
        if not isinstance(body, dict):
            raise bad("the request body must be a JSON object", None, "invalid_body")
        unknown = sorted(set(body) - set(FIELDS))
        if unknown:
            raise bad(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0], "unknown_parameter")
        if body.get("integrations"):
            raise bad("integrations are not available on this server", "integrations")
        return {"model": None, "training_file": None, **body}  # a missing one gets its own message below

    @field_validator("model", "training_file", mode="before")
    @classmethod
    def _required(cls, value, info):
        if not isinstance(value, str) or not (value.strip() if info.field_name == "model" else value):
            raise bad(f"Missing required parameter: '{info.field_name}'", info.field_name,
                      "missing_required_parameter")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, method):
        method = method or {"type": "supervised"}
        if not isinstance(method, dict) or method.get("type", "supervised") not in METHODS:
            kind = method.get("type") if isinstance(method, dict) else method
            raise bad(f"method type '{kind}' is not available: use {', '.join(METHODS)}", "method.type")
        kind = method.get("type", "supervised")
        extra = sorted(k for k in set(method) - {"type", kind} if method[k] is not None)
        if extra:
            raise bad(f"unknown method field(s) {extra} for type {kind}", f"method.{extra[0]}")
        sub, spec = method.get(kind) or {}, METHODS[kind]
        if not isinstance(sub, dict):
            raise bad(f"method.{kind} must be an object", f"method.{kind}")
        unknown = sorted(set(sub) - {"hyperparameters", *spec.extra})
        if unknown:
            takes = " and ".join(repr(k) for k in ("hyperparameters", *spec.extra))
            raise bad(f"unknown field '{unknown[0]}' in method.{kind}: it takes {takes}",
                      f"method.{kind}.{unknown[0]}", "unknown_parameter")
        for key in spec.extra:
            if sub.get(key) is None:
                raise bad(f"Missing required parameter: 'method.{kind}.{key}'", f"method.{kind}.{key}",
                          "missing_required_parameter")
        out = {"hyperparameters": check_hyperparameters(sub.get("hyperparameters"), kind)}
        if "grader" in spec.extra:
            out["grader"] = check_grader(sub["grader"], f"method.{kind}.grader")
        return {"type": kind, kind: out}

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _hyperparameters(cls, given, info):
        if given is not None and not isinstance(given, dict):
            raise bad("hyperparameters must be an object", "hyperparameters")
        method = info.data.get("method")
        return check_hyperparameters(given, method.type if method is not None else "supervised")

    @field_validator("validation_file", mode="before")
    @classmethod
    def _validation_file(cls, value):
        if value is not None and (not isinstance(value, str) or not value):
            raise bad("Missing required parameter: 'validation_file'", "validation_file", "missing_required_parameter")
        return value

    @field_validator("suffix", mode="before")
    @classmethod
    def _suffix(cls, suffix):
        if suffix is not None:
            check_name(suffix, "suffix")
            if len(suffix) > 40:
                raise bad("suffix is at most 40 characters", "suffix")
        return suffix

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, seed):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31):
            raise bad(f"seed must be an integer in 0..{2**31 - 1}", "seed")
        return seed

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, m):
        if m is not None and (not isinstance(m, dict) or len(m) > 16 or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in m.items())):
            raise bad("metadata is at most 16 string pairs (keys up to 64 characters, values up to 512)", "metadata")
        return m

    def method_extra(self) -> dict:
        """What the method's object holds besides hyperparameters (reinforcement: the grader)."""
        params = self.method.params()
        return {k: getattr(params, k) for k in METHODS[self.method.type].extra}

    def resolved_hyperparameters(self) -> dict:
        """Every hyperparameter of the method, the method's own over the top-level ones, "auto" resolved."""
        params = self.method.params()
        top = self.hyperparameters.given() if self.hyperparameters is not None else {}
        own = params.hyperparameters.given() if params is not None and params.hyperparameters is not None else {}
        return hyperparameters({**top, **own}, self.method.type)


# ---- what the server sends ---------------------------------------------------------------------------------
class JobHyperparameters(Response):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    finetuning_type: str | None = None  # absent from a job made before it existed


class MethodHyperparameters(JobHyperparameters):
    beta: float | None = None


class JobMethodParams(Response):
    hyperparameters: MethodHyperparameters


class ReinforcementHyperparameters(JobHyperparameters):
    compute_multiplier: float
    eval_interval: Literal["auto"] | int
    eval_samples: Literal["auto"] | int
    reasoning_effort: str


class JobReinforcement(Response):
    grader: dict[str, Any]
    hyperparameters: ReinforcementHyperparameters


class JobMethod(Response):
    OMIT_NONE = ("supervised", "dpo", "reinforcement")
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: JobMethodParams | None = None
    dpo: JobMethodParams | None = None
    reinforcement: JobReinforcement | None = None


class JobError(Response):
    code: str | None = None
    message: str
    param: str | None = None


class FineTuningJob(Response):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: JobHyperparameters
    model: str
    organization_id: str
    result_files: list[str] = []
    seed: int
    status: JobStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[Any] = []
    metadata: dict[str, str] | None = None
    user_provided_suffix: str | None = None
    method: JobMethod

    @classmethod
    def from_row(cls, r: dict) -> FineTuningJob:
        kind, hp = r["method"]["type"], r["hyperparameters"]
        own = {k: r["method"][k] for k in METHODS[kind].extra}  # reinforcement: the grader
        return cls(id=r["id"], created_at=r["created_at"], error=r["error"], fine_tuned_model=r["fine_tuned_model"],
                   finished_at=r["finished_at"], hyperparameters={k: v for k, v in hp.items() if k in COMMON},
                   model=r["model"], organization_id=r["tenant"], seed=r["seed"], status=r["status"],
                   trained_tokens=r["trained_tokens"], training_file=r["training_file"],
                   validation_file=r["validation_file"], metadata=r["metadata"], user_provided_suffix=r["suffix"],
                   method={"type": kind, kind: {"hyperparameters": hp, **own}})


class JobEvent(Response):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, r: dict) -> JobEvent:
        return cls(id=r["id"], created_at=r["created_at"], level=r["level"], message=r["message"], type=r["type"],
                   data=r["data"])


class JobCheckpoint(Response):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int

    @classmethod
    def from_row(cls, r: dict) -> JobCheckpoint:
        return cls(id=r["id"], created_at=r["created_at"], fine_tuned_model_checkpoint=r["name"],
                   fine_tuning_job_id=r["job_id"], metrics={"step": r["step"], **(r["metrics"] or {})},
                   step_number=r["step"])


class JobList(Page[FineTuningJob]):
    pass


class EventList(Page[JobEvent]):
    pass


class CheckpointList(Page[JobCheckpoint]):
    pass
