"""`multi`: several graders, combined by the `calculate_output` formula over their scores.

    graders          {name: grader} (a single grader object counts as {its name: it}); no multi inside
    calculate_output an arithmetic expression of the names: numbers, + - * / and ^ (power, as ** too),
                     parentheses, min max abs floor ceil exp sqrt log (OpenAI's list)

The formula is parsed with `ast` and walked by `evaluate`, which knows only those nodes: nothing is
passed to eval(). A name that is not a grader, or any other syntax, is refused when the grader is
validated. Each sub-grader scores the batch; a failed one counts 0 in the formula and its error flags
carry over; a formula that fails on the numbers (x / 0, log(0)) scores 0 with formula_parse_error.
sub-scores go to `Graded.sub` (GraderRunResponse.sub_rewards).
"""

from __future__ import annotations

import ast
import math
import operator

from tunelab.errors import TunelabError
from tunelab.train.graders.base import Graded, check_fields, need_str

MAX_FORMULA = 1000  # characters: keeps the tree shallow enough for evaluate's recursion
BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.Pow: operator.pow}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
FUNCTIONS = {"min": min, "max": max, "abs": abs, "floor": lambda x: float(math.floor(x)),
             "ceil": lambda x: float(math.ceil(x)), "exp": math.exp,
             "sqrt": math.sqrt, "log": math.log}


def parse_formula(text: str, names, where: str) -> ast.Expression:
    """The formula's tree, every node and name checked (TunelabError naming the first bad one)."""
    if len(text) > MAX_FORMULA:
        raise TunelabError(f"calculate_output is longer than {MAX_FORMULA} characters", where=where)
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval")
    except SyntaxError as e:
        raise TunelabError(f"calculate_output does not parse: {e.msg}", where=where) from None
    except (RecursionError, MemoryError):
        raise TunelabError("calculate_output is nested too deeply", where=where) from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if node.id not in names and node.id not in FUNCTIONS:
                raise TunelabError(f"calculate_output names {node.id!r}, which is no grader", where=where,
                                   hint=f"graders: {', '.join(names)}")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
                raise TunelabError(f"calculate_output calls {ast.unparse(node.func)!r}", where=where,
                                   hint=f"functions: {', '.join(FUNCTIONS)}")
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise TunelabError(f"calculate_output has the constant {node.value!r}", where=where)
        elif not isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Load, *BINARY, *UNARY)):
            raise TunelabError(f"calculate_output may not use {type(node).__name__} ({ast.unparse(node)})"
                               if isinstance(node, ast.expr) else f"calculate_output may not use {type(node).__name__}",
                               where=where, hint="numbers, grader names, + - * / ^, " + " ".join(FUNCTIONS))
    return tree


def evaluate(node, values: dict[str, float]) -> float:
    """The value of a checked formula tree with `values` for the names."""
    if isinstance(node, ast.Expression):
        return evaluate(node.body, values)
    if isinstance(node, ast.Constant):
        return float(node.value)  # floats only: 9 ** 9 ** 9 overflows (an error) instead of running on
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.BinOp):
        return BINARY[type(node.op)](evaluate(node.left, values), evaluate(node.right, values))
    if isinstance(node, ast.UnaryOp):
        return UNARY[type(node.op)](evaluate(node.operand, values))
    if isinstance(node, ast.Call):
        return FUNCTIONS[node.func.id](*(evaluate(a, values) for a in node.args))
    raise TypeError(type(node).__name__)  # parse_formula let nothing else through


def sub_graders(g: dict) -> dict:
    graders = g.get("graders")
    if isinstance(graders, dict) and "type" in graders and isinstance(graders.get("type"), str):
        return {graders.get("name"): graders}
    return graders


class Multi:
    type = "multi"
    required = ("type", "name", "graders", "calculate_output")
    optional = ()

    def __init__(self, registry: dict):
        self.registry = registry  # type -> GraderType, for the sub-graders

    def check(self, g: dict, where: str) -> None:
        check_fields(g, self.required, self.optional, where)
        subs = sub_graders(g)
        if not isinstance(subs, dict) or not subs:
            raise TunelabError("graders must be an object {name: grader}", where=f"{where}.graders")
        for name, sub in subs.items():
            w = f"{where}.graders.{name}"
            if not isinstance(name, str) or not name.isidentifier():
                raise TunelabError(f"grader name {name!r} is not usable in a formula (letters, digits, _)", where=w)
            kind = sub.get("type") if isinstance(sub, dict) else None
            kind = kind if isinstance(kind, str) else None
            if kind == self.type:
                raise TunelabError("a multi grader cannot hold another multi grader", where=w)
            if kind not in self.registry:
                raise TunelabError(f"unknown grader type {kind!r}", where=w)
            self.registry[kind].check(sub, w)
        parse_formula(need_str(g, "calculate_output", where), subs, f"{where}.calculate_output")

    def grade(self, g: dict, samples, items, ctx) -> list[Graded]:
        subs = sub_graders(g)
        tree = parse_formula(g["calculate_output"], subs, "calculate_output")
        per = {name: self.registry[sub["type"]].grade(sub, samples, items, ctx) for name, sub in subs.items()}
        out = []
        for i in range(len(samples)):
            graded = {name: per[name][i] for name in subs}
            values = {name: x.score for name, x in graded.items()}
            result = Graded(0.0, sub=values)
            for x in graded.values():
                result.errors.update(x.errors)
                for model, usage in x.token_usage.items():
                    total = result.token_usage.setdefault(model, dict.fromkeys(usage, 0))
                    for k, v in usage.items():
                        total[k] = total.get(k, 0) + v
                result.sampled_model_name = result.sampled_model_name or x.sampled_model_name
            try:
                value = float(evaluate(tree, values))
                if not math.isfinite(value):
                    raise ValueError(value)
                result.score = value
            except (ArithmeticError, ValueError, TypeError, RecursionError):
                result.errors["formula_parse_error"] = True
            out.append(result)
        return out
