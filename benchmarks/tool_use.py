"""Tool calling through `tunelab serve` and the official openai client, base vs tuned run; prints JSON.

    python benchmarks/tool_use.py runs/tools-smollm2 [--data examples/data/tools/test.jsonl] [--max-tokens 96]

Starts `tunelab serve --no-auth` on a free loopback port with the run's base (`--base`, default the run's
model.name) and the run's folder as `--runs`, then sends every held-out example of `--data` to the base and to
the run: `client.chat.completions.create(model=..., messages=the turns before the reference, tools=the
record's tools, temperature=0)`. Each reply's `message.tool_calls` (parsed by the server) and `content` are
scored against the reference's calls with eval/tool_calls (decision, function, call_exact, needed_exact,
none_right, valid_json; means with bootstrap 95% intervals over examples). Per model: the metrics, the
wall time, and each example's calls and text (`--examples` prints them all; by default the misses).

`--reasoning` scores a reasoning run instead (examples/data/reasoning/test.jsonl: question, `answer`): per
model through the server, the share of replies whose `message.reasoning_content` is non-empty (the server
split a <think> block off) and whose `content` is exactly the answer, with bootstrap intervals.

A base whose own chat template has no tool format (SmolLM2's) is refused by the server (400
tools_unsupported, recorded under "refused"). `--local` (on by default) also scores the run and its base
in this process as `tunelab eval RUN --base` does: the same weights with the run's template (the tools
rendered the same way for both), greedy text read with the template's tool syntax (data/tool_syntax).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tunelab.eval import tool_calls as tc  # noqa: E402


def local_server(base: str, runs: Path, max_batch: int = 8):
    """`tunelab serve --no-auth` on a free loopback port serving `runs`: benchmarks/serve.py's, which
    yields (its /v1 URL, seconds to the first answer)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from serve import local_server as serving  # benchmarks/serve.py

    return serving(base, max_batch, runs=runs, ready_within=300)


def _calls(message) -> list[dict]:
    return [{"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in (message.tool_calls or [])]


def score_model(client, model: str, items: list[tc.ToolItem], max_tokens: int) -> tuple[dict, list[dict], float]:
    """(summary of the tool-call metrics, one row per example, wall seconds) for one served model."""
    rows, t = [], time.perf_counter()
    for it in items:
        r = client.chat.completions.create(model=model, messages=it.request, tools=it.tools, temperature=0,
                                           max_tokens=max_tokens)
        msg = r.choices[0].message
        calls = _calls(msg)
        scores = tc.score_message(msg.content, calls, it.expected)
        rows.append({"where": it.where, "scores": scores, "content": msg.content,
                     "calls": [[c["function"]["name"], c["function"]["arguments"]] for c in calls],
                     "expected": [[c["function"]["name"], c["function"]["arguments"]] for c in it.expected],
                     "finish_reason": r.choices[0].finish_reason})
    return tc.summarize([r["scores"] for r in rows]), rows, time.perf_counter() - t


def score_reasoning(client, model: str, path: Path, max_tokens: int) -> dict:
    """{"metrics": {"reasoning_split", "answer_exact"}, "examples"} for one served model on a reasoning file."""
    from tunelab.eval import bootstrap

    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        msg = client.chat.completions.create(model=model, messages=rec["messages"][:-1], temperature=0,
                                             max_tokens=max_tokens).choices[0].message
        reasoning = getattr(msg, "reasoning_content", None) or (msg.model_extra or {}).get("reasoning_content")
        rows.append({"question": rec["messages"][0]["content"], "reasoning_content": reasoning,
                     "content": msg.content, "answer": rec["answer"],
                     "reasoning_split": float(bool(reasoning)),
                     "answer_exact": float((msg.content or "").strip() == rec["answer"])})
    return {"metrics": {m: bootstrap.summary([r[m] for r in rows]) for m in ("reasoning_split", "answer_exact")},
            "examples": rows}


def local(run: Path, items: list[tc.ToolItem], max_tokens: int, every: bool) -> dict:
    """The run and its base scored in this process (eval/tool_calls.evaluate_tools, as `tunelab eval --base`)."""
    from tunelab.eval.compare import contenders_for

    out = {}
    for c in contenders_for(str(run), base=True):
        t = time.perf_counter()
        res = tc.evaluate_tools([c], items, max_new_tokens=max_tokens, batch_size=8)
        rows = [{"where": ex["where"], "reply": ex["models"][c.label]["reply"], "scores": ex["models"][c.label]["scores"]}
                for ex in res["examples"]]
        shown = rows if every else [r for r in rows if r["scores"]["call_exact"] != 1.0]
        label = ("tuned" if c.kind == "run" else "base") + " (local, the run's template)"
        out[label] = {"model": c.label, "tool_syntax": res["settings"]["tool_syntax"][c.label],
                      "metrics": res["models"][0]["metrics"], "wall_s": round(time.perf_counter() - t, 1),
                      "examples" if every else "misses": shown}
    return out


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the tuned run directory (runs/NAME)")
    ap.add_argument("--data", type=Path, default=ROOT / "examples/data/tools/test.jsonl")
    ap.add_argument("--base", help="the base model (default: the run's model.name)")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--examples", action="store_true", help="print every example's reply, not only the misses")
    ap.add_argument("--reasoning", action="store_true", help="RUN is a reasoning run; --data a reasoning file")
    ap.add_argument("--no-local", dest="local", action="store_false",
                    help="skip scoring the run and its base in this process (the run's template for both)")
    args = ap.parse_args()
    import openai
    import yaml

    run = args.run.resolve()
    base = args.base or (yaml.safe_load((run / "config.yaml").read_text())["model"]["name"])
    if args.reasoning:
        data = args.data if args.data != ap.get_default("data") else ROOT / "examples/data/reasoning/test.jsonl"
        out = {"data": str(data), "base": base, "run": str(run), "max_tokens": args.max_tokens, "cpu": _cpu(),
               "load_avg_start": os.getloadavg()[0], "models": {}}
        with local_server(base, run.parent) as (url, ready_s):
            client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)
            for label, model in (("base", base), ("tuned", run.name)):
                out["models"][label] = {"model": model, **score_reasoning(client, model, data, args.max_tokens)}
        out["load_avg_end"] = os.getloadavg()[0]
        print(json.dumps(out, indent=1, ensure_ascii=False))
        return
    items = tc.load_tool_items(args.data)
    out = {"data": str(args.data), "n_examples": len(items), "needs_call": sum(bool(i.expected) for i in items),
           "base": base, "run": str(run), "max_tokens": args.max_tokens, "temperature": 0,
           "cpu": _cpu(), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()[0], "models": {}}
    with local_server(base, run.parent) as (url, ready_s):
        out["server_ready_s"] = round(ready_s, 1)
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)
        for label, model in (("base (server)", base), ("tuned (server)", run.name)):
            try:
                summary, rows, wall = score_model(client, model, items, args.max_tokens)
            except openai.BadRequestError as e:
                out.setdefault("refused", {})[label] = str(e)
                continue
            shown = rows if args.examples else [r for r in rows if r["scores"]["call_exact"] != 1.0]
            out["models"][label] = {"model": model, "metrics": summary, "wall_s": round(wall, 1),
                                    "examples" if args.examples else "misses": shown}
    if args.local:
        out["models"].update(local(run, items, args.max_tokens, args.examples))
    out["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
