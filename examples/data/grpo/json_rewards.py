"""Rewards of the JSON task (make_json.py), TRL's signature: f(prompts, completions, expected, **_).

    json_object   format: 1 if the whole reply (stripped) parses as a JSON object, else 0
    json_fields   accuracy: the first {...} span of the reply parsed (fences or prose around it allowed),
                  share of the expected keys whose value has the expected JSON type and equals the
                  expected value (strings compared case-insensitively, numbers within 1e-6), times
                  len(expected) / len(keys given) when the object has extra keys; 0 if nothing parses
"""

import json


def _object(text: str):
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        obj = json.loads(text[start:end + 1])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _same(got, want) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, str):
        return isinstance(got, str) and got.strip().casefold() == want.casefold()
    if isinstance(want, int) and not isinstance(got, int):
        return False
    return isinstance(got, (int, float)) and abs(got - want) < 1e-6


def json_object(prompts, completions, **_):
    out = []
    for c in completions:
        try:
            out.append(float(isinstance(json.loads(c.strip()), dict)))
        except ValueError:
            out.append(0.0)
    return out


def json_fields(prompts, completions, expected, **_):
    out = []
    for c, want in zip(completions, expected):
        obj = _object(c)
        if obj is None:
            out.append(0.0)
            continue
        hits = sum(k in obj and _same(obj[k], v) for k, v in want.items())
        out.append(hits / len(want) * min(1.0, len(want) / max(1, len(obj))))
    return out
