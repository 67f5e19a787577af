"""Write examples/data/grpo/arithmetic/train.jsonl: 64 addition prompts with their answers.

    python examples/data/grpo/make_arithmetic.py

Deterministic (random.Random(33)): a, b in 10..99, the prompt "What is a + b? End with '#### N'.",
the `answer` column str(a + b) for the exact_match reward.
"""

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "arithmetic" / "train.jsonl"


def rows(n: int = 64, seed: int = 33) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        out.append({"prompt": f"What is {a} + {b}? End with '#### N'.", "answer": str(a + b)})
    return out


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows()), encoding="utf-8")
    print(f"wrote {OUT}")
