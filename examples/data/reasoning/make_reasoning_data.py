"""Write a small reasoning dataset: short arithmetic, one worked line of reasoning, then the answer.

    python examples/data/reasoning/make_reasoning_data.py            (deterministic)
    python examples/data/reasoning/make_reasoning_data.py --inline   (the reasoning as <think>...</think> in content)

Each record is {"messages": [user question, {"role": "assistant", "reasoning_content": "23 + 40 = 63, 63 + 8 = 71.",
"content": "71"}], "answer": "71"}: the assistant turn in the shape OpenAI-compatible servers return reasoning
(`reasoning_content` beside `content`). `--inline` writes the same turn as "<think>\\n...\\n</think>\\n\\n71" instead.
train.jsonl 120, validation.jsonl 8, test.jsonl 30; the held-out operands lie outside the training range.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

ASK = {"+": ["What is {a} + {b}?", "Add {a} and {b}.", "{a} plus {b} = ?"],
       "-": ["What is {a} - {b}?", "Subtract {b} from {a}.", "{a} minus {b} = ?"],
       "*": ["What is {a} * {b}?", "Multiply {a} by {b}.", "{a} times {b} = ?"]}


def worked(a: int, op: str, b: int) -> tuple[str, int]:
    """(one line of reasoning that splits b into tens and ones, the result)."""
    tens, ones = b - b % 10, b % 10
    if op == "+":
        mid = a + tens
        return f"{a} + {tens} = {mid}, {mid} + {ones} = {mid + ones}.", a + b
    if op == "-":
        mid = a - tens
        return f"{a} - {tens} = {mid}, {mid} - {ones} = {mid - ones}.", a - b
    return f"{a} * {tens} = {a * tens}, {a} * {ones} = {a * ones}, {a * tens} + {a * ones} = {a * b}.", a * b


def record(rng: random.Random, lo: int, hi: int, inline: bool) -> dict:
    op = rng.choice("+-*")
    a, b = rng.randint(lo, hi), rng.randint(12, 19 if op == "*" else hi)
    if op == "-" and b > a:
        a, b = b, a
    reasoning, result = worked(a, op, b)
    question = rng.choice(ASK[op]).format(a=a, b=b)
    turn = ({"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{result}"} if inline else
            {"role": "assistant", "reasoning_content": reasoning, "content": str(result)})
    return {"messages": [{"role": "user", "content": question}, turn], "answer": str(result)}


def main(inline: bool) -> None:
    rng = random.Random(0)
    splits = {"train": [record(rng, 20, 79, inline) for _ in range(120)],
              "validation": [record(rng, 20, 79, inline) for _ in range(8)],
              "test": [record(rng, 80, 99, inline) for _ in range(30)]}
    for name, rows in splits.items():
        with open(HERE / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        print(f"{name}.jsonl: {len(rows)} records")


if __name__ == "__main__":
    main("--inline" in sys.argv[1:])
