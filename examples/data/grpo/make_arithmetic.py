"""Write examples/data/grpo/arithmetic/{train,heldout}.jsonl: addition and subtraction prompts whose
reply must end with '#### N'.

    python examples/data/grpo/make_arithmetic.py

Deterministic (random.Random(33)). train: 256 prompts, two-digit operands, phrased "What is a + b? End
with '#### N'." (or a - b, a >= b). heldout: 64 prompts unlike training: other wordings ("Compute ...",
"Calculate ..."), half of them two-digit operands, half three-digit (100..999), no (a, op, b) shared
with train. The `answer`
column is str(result), for the exact_match reward.
"""

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "arithmetic"
TRAIN_WORDING = ("What is {a} {op} {b}? End with '#### N'.",)
HELDOUT_WORDING = ("Compute {a} {op} {b}. Finish your reply with '#### N', N being the result.",
                   "Calculate {a} {op} {b} and end with '#### N'.")


def _row(rng: random.Random, lo: int, hi: int, wordings: tuple[str, ...]) -> tuple[tuple, dict]:
    a, b, op = rng.randint(lo, hi), rng.randint(lo, hi), rng.choice("+-")
    if op == "-" and b > a:
        a, b = b, a
    prompt = rng.choice(wordings).format(a=a, op=op, b=b)
    return (a, op, b), {"prompt": prompt, "answer": str(a + b if op == "+" else a - b)}


def rows(n_train: int = 256, n_heldout: int = 64, seed: int = 33) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    train, seen = [], set()
    while len(train) < n_train:
        key, row = _row(rng, 10, 99, TRAIN_WORDING)
        if key not in seen:
            seen.add(key)
            train.append(row)
    held = []
    while len(held) < n_heldout:
        key, row = _row(rng, *((10, 99) if len(held) % 2 == 0 else (100, 999)), HELDOUT_WORDING)
        if key not in seen:
            seen.add(key)
            held.append(row)
    return train, held


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, part in zip(("train", "heldout"), rows()):
        (OUT / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
        print(f"wrote {OUT / name}.jsonl ({len(part)} prompts)")
