"""Reward functions of task grpo: TRL's signature, built-ins, user functions, weighted sums.

A reward is `f(prompts, completions, **columns) -> list[float]` (TRL's `reward_funcs` signature):
`prompts` as the data gives them (a string or a list of chat messages per row), `completions` the
sampled replies as text (special tokens and the stop token removed), `columns` every other data
column, one value per row (each prompt's row repeated for its G completions). None in the list
means "no score" (NaN: left out of that completion's weighted sum, as TRL's nansum).

Built-ins (`grpo.rewards: [{name: ...}]`), each scoring in [0, 1]:

    exact_match  1 if the answer == str(column) after strip(); with `pattern`, the answer is the last
                 match's group 1 (or the whole match) in the completion, else the whole completion
    contains     1 if str(column) occurs in the completion
    regex        1 if `pattern` matches anywhere in the completion (re.search, DOTALL): a format check
    length       max(0, 1 - |words - target| / target), words = len(completion.split())
    json_valid   1 if the stripped completion parses as JSON

Graders (`{grader: {type: string_check | text_similarity | score_model | python | multi, ...}}`, OpenAI's
grader objects, train/graders/): the item is the completion's data row (its columns), sample.output_text
the completion. A grade that fails (a python grader raising or timing out, a judge's reply without a
score) scores 0 and is counted in the reward function's `errors` (flag -> count); it never stops training.

User functions (`{function: "module:function"}` or `{function: "path.py:function"}`, the path
relative to the config's folder) are imported when the rewards load: a missing module, file or
function is a one-line TunelabError (exit 2) naming it.

Total reward of completion i: r_i = sum_k w_k r_k,i over the rewards whose r_k,i is not NaN.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunelab.errors import TunelabError
from tunelab.train.graders import GradeContext, default_context, run_grader, validate_grader


# ---- built-ins -----------------------------------------------------------------------------------------------
def _answer(completion: str, pattern: re.Pattern | None) -> str:
    if pattern is None:
        return completion.strip()
    found = list(pattern.finditer(completion))
    if not found:
        return ""
    m = found[-1]
    return (m.group(1) if m.re.groups else m.group(0)).strip()


def exact_match(column: str, pattern: str | None = None) -> Callable:
    rx = re.compile(pattern, re.DOTALL) if pattern else None

    def exact_match(prompts, completions, **cols):
        return [float(_answer(c, rx) == str(v).strip()) for c, v in zip(completions, cols[column])]
    return exact_match


def contains(column: str) -> Callable:
    def contains(prompts, completions, **cols):
        return [float(str(v) in c) for c, v in zip(completions, cols[column])]
    return contains


def regex(pattern: str) -> Callable:
    rx = re.compile(pattern, re.DOTALL)

    def regex(prompts, completions, **cols):
        return [float(rx.search(c) is not None) for c in completions]
    return regex


def length(target: int) -> Callable:
    def length(prompts, completions, **cols):
        return [max(0.0, 1.0 - abs(len(c.split()) - target) / target) for c in completions]
    return length


def json_valid() -> Callable:
    def json_valid(prompts, completions, **cols):
        out = []
        for c in completions:
            try:
                json.loads(c.strip())
                out.append(1.0)
            except ValueError:
                out.append(0.0)
        return out
    return json_valid


@dataclass(frozen=True)
class Builtin:
    """A built-in reward: its factory and the spec fields it needs (given to the factory by name)."""

    make: Callable
    needs: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


BUILTINS: dict[str, Builtin] = {
    "exact_match": Builtin(exact_match, ("column",), ("pattern",)),
    "contains": Builtin(contains, ("column",)),
    "regex": Builtin(regex, ("pattern",)),
    "length": Builtin(length, ("target",)),
    "json_valid": Builtin(json_valid),
}


# ---- loading -------------------------------------------------------------------------------------------------
@dataclass
class Reward:
    name: str  # what the metrics call it: the built-in's or the function's name
    fn: Callable
    weight: float = 1.0


def load_function(ref: str, base: Path | None, where: str) -> Callable:
    """`module:function` (imported) or `path.py:function` (the file, relative to `base`)."""
    mod_name, sep, fn_name = ref.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise TunelabError(f"reward function '{ref}' is not module:function", where=where,
                           hint="e.g. function: my_rewards.py:score or function: mypkg.rewards:score")
    if mod_name.endswith(".py"):
        path = Path(mod_name).expanduser()
        path = path if path.is_absolute() or base is None else base / path
        if not path.is_file():
            raise TunelabError(f"reward file not found: {path}", where=where, hint="the path is relative to the config")
        spec = importlib.util.spec_from_file_location(f"tunelab_reward_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's module failed on import: one line, not its traceback
            raise TunelabError(f"importing {path} failed: {type(e).__name__}: {e}", where=where) from None
    else:
        try:
            module = importlib.import_module(mod_name)
        except ImportError as e:
            raise TunelabError(f"reward module '{mod_name}' cannot be imported ({e})", where=where,
                               hint="install it, or give a file: function: path/to/rewards.py:name") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise TunelabError(f"'{mod_name}' has no function '{fn_name}'", where=where)
    return fn


def grader_reward(grader: dict, ctx: GradeContext | None = None) -> Callable:
    """A reward (TRL's signature) from an OpenAI grader object: item = the row's columns, sample = the
    completion; `reward.errors` counts the failed grades by OpenAI error flag."""
    context = ctx or default_context()

    def reward(prompts, completions, **cols):
        items = [{k: v[i] for k, v in cols.items()} for i in range(len(completions))]
        graded = run_grader(grader, list(completions), items, context)
        for g in graded:
            for flag, on in g.errors.items():
                if on is True:
                    reward.errors[flag] = reward.errors.get(flag, 0) + 1
        return [g.score for g in graded]
    reward.errors = {}
    reward.__name__ = grader.get("name") or f"grader_{grader.get('type')}"
    return reward


def load_rewards(specs: list, base: Path | None = None, ctx: GradeContext | None = None) -> list[Reward]:
    """The rewards of `grpo.rewards` (RewardSpec list); TunelabError (one line) for a bad one. `ctx`: the
    graders' services (default_context(): MiniLM for cosine, the environment's openai client)."""
    if not specs:
        raise TunelabError("task grpo needs at least one reward", where="grpo.rewards",
                           hint="e.g. rewards: [{name: exact_match, column: answer}]")
    out = []
    for i, s in enumerate(specs):
        where = f"grpo.rewards[{i}]"
        if s.function is not None:
            fn = load_function(s.function, base, f"{where}.function")
            out.append(Reward(getattr(fn, "__name__", s.function), fn, s.weight))
            continue
        if s.grader is not None:
            validate_grader(s.grader, f"{where}.grader")
            fn = grader_reward(s.grader, ctx)
            out.append(Reward(fn.__name__, fn, s.weight))
            continue
        b = BUILTINS.get(s.name)
        if b is None:
            raise TunelabError(f"unknown reward '{s.name}'", where=f"{where}.name",
                               hint=f"built-ins: {', '.join(BUILTINS)}; or function: module:function")
        missing = [k for k in b.needs if getattr(s, k) is None]
        if missing:
            raise TunelabError(f"reward {s.name} needs {', '.join(missing)}", where=where)
        kw = {k: getattr(s, k) for k in b.needs + b.optional if getattr(s, k) is not None}
        try:
            fn = b.make(**kw)
        except re.error as e:
            raise TunelabError(f"bad pattern {s.pattern!r}: {e}", where=f"{where}.pattern") from None
        out.append(Reward(s.name, fn, s.weight))
    seen: dict[str, int] = {}
    for r in out:  # two rewards of one name: metrics keys name, name_2, ...
        seen[r.name] = k = seen.get(r.name, 0) + 1
        if k > 1:
            r.name = f"{r.name}_{k}"
    return out


# ---- scoring -------------------------------------------------------------------------------------------------
def score(rewards: list[Reward], prompts: list, completions: list[str],
          columns: dict[str, list]) -> tuple[list[float], dict[str, list[float]]]:
    """(total r_i per completion, {reward name: its scores}) - see the module docstring.
    A reward that raises, or returns the wrong number of scores, is a one-line TunelabError."""
    per: dict[str, list[float]] = {}
    for r in rewards:
        try:
            got = r.fn(prompts=prompts, completions=completions, **columns)
        except KeyError as e:
            raise TunelabError(f"reward {r.name}: the data has no column {e}", where="grpo.rewards",
                               hint=f"columns: {', '.join(sorted(columns)) or 'none'}") from None
        except Exception as e:  # the user's code: name it and its error in one line
            raise TunelabError(f"reward {r.name} raised {type(e).__name__}: {e}", where="grpo.rewards") from None
        try:
            vals = [math.nan if v is None else float(v) for v in got]
        except (TypeError, ValueError):
            raise TunelabError(f"reward {r.name} returned {type(got).__name__}, not a list of numbers",
                               where="grpo.rewards") from None
        if len(vals) != len(completions):
            raise TunelabError(f"reward {r.name} returned {len(vals)} scores for {len(completions)} completions",
                               where="grpo.rewards")
        per[r.name] = vals
    total = [sum(r.weight * per[r.name][i] for r in rewards if not math.isnan(per[r.name][i]))
             for i in range(len(completions))]
    return total, per
