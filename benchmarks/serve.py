"""`tunelab serve` under load, through the openai client; prints JSON.

    python benchmarks/serve.py                          # starts `tunelab serve --no-auth` on the embedded model
    python benchmarks/serve.py --url http://127.0.0.1:8000/v1 --key tl-...   # an already running one

  streams_N          N concurrent streamed chat completions (N = 1, 4, 16), each `--tokens` tokens
                     at most, temperature 0, different prompts:
      aggregate_tok_s    sum of completion tokens / wall time from the first request to the last token
      per_stream_tok_s   mean over streams of completion tokens / that stream's own time
      ttft_s_p50         median time to the first content chunk
  speedup_16_vs_1    aggregate_tok_s(16) / aggregate_tok_s(1)   (target >= 4: continuous batching)
  burst              `--burst` (50) concurrent non-streamed chat requests (`--burst-tokens` each):
      errors, latency_s_p50, latency_s_p95, wall_s

Completion tokens are the server's `usage` (a stream asks for it with include_usage).
  server_ready_s     launch of `tunelab serve` to its first answer (imports, model load, engine)
`--weights fp32,auto` runs the whole set once per server --weights, one after the other, and prints
{weights: results}: compare settings within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TOPICS = ["the sea", "a lighthouse keeper", "learning to cook", "a robot gardener", "the first snow",
          "an old library", "a night train", "mountain weather", "a lost cat", "bees in the city",
          "a chess club", "the desert at noon", "a bakery at dawn", "a broken clock", "a paper boat",
          "the moon landing"]


def prompt(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}."}]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q  # linear interpolation between the closest ranks
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def one_stream(client, model: str, i: int, tokens: int, t0: float) -> dict:
    start = time.perf_counter()
    first, n = None, 0
    for chunk in client.chat.completions.create(model=model, messages=prompt(i), max_tokens=tokens,
                                                temperature=0, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter() - start
        if chunk.usage is not None:
            n = chunk.usage.completion_tokens
    end = time.perf_counter()
    return {"tokens": n, "seconds": end - start, "ttft": first or end - start, "end": end - t0}


def streams(client, model: str, n: int, tokens: int) -> dict:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as ex:
        rows = list(ex.map(lambda i: one_stream(client, model, i, tokens, t0), range(n)))
    wall = max(r["end"] for r in rows)
    total = sum(r["tokens"] for r in rows)
    return {"streams": n, "completion_tokens": total, "wall_s": round(wall, 3),
            "aggregate_tok_s": round(total / wall, 2),
            "per_stream_tok_s": round(statistics.mean(r["tokens"] / r["seconds"] for r in rows), 2),
            "ttft_s_p50": round(pct([r["ttft"] for r in rows], 0.5), 3)}


def burst(client, model: str, n: int, tokens: int) -> dict:
    def ask(i):
        start = time.perf_counter()
        try:
            client.chat.completions.create(model=model, messages=prompt(i), max_tokens=tokens, temperature=0.7,
                                           seed=i)
            return time.perf_counter() - start, None
        except Exception as e:  # counted, not raised: the figure is the error count
            return time.perf_counter() - start, f"{type(e).__name__}: {e}"

    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as ex:
        rows = list(ex.map(ask, range(n)))
    lat = [s for s, err in rows if err is None]
    errors = [err for _, err in rows if err is not None]
    return {"requests": n, "errors": len(errors), "first_error": errors[0] if errors else None,
            "latency_s_p50": round(pct(lat, 0.5), 3), "latency_s_p95": round(pct(lat, 0.95), 3),
            "wall_s": round(time.perf_counter() - t0, 3)}


@contextlib.contextmanager
def local_server(base: str, max_batch: int, runs: Path | None = None, ready_within: float = 180,
                 weights: str = "auto"):
    """`tunelab serve --no-auth` in a subprocess (the client's threads do not share its GIL), serving
    the runs in `runs` (None: an empty folder); yields (its /v1 URL, seconds from launch to the first
    answer of GET /v1/models). Also used by benchmarks/tool_use.py."""
    import subprocess
    import sys
    import tempfile
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="tunelab-serve-bench-")
    env = {**os.environ, "TUNELAB_SERVE_HOME": tmp, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tunelab", "serve", "--no-auth", "--port", str(port), "--base", base,
           "--runs", str(runs or Path(tmp) / "runs"), "--max-batch", str(max_batch), "--log-level", "warning", "--weights", weights]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited ({proc.returncode})")
            if time.perf_counter() - t > ready_within:
                raise SystemExit(f"the server did not answer within {ready_within:.0f} s")
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        yield url, time.perf_counter() - t
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running server's /v1 URL (default: start one here)")
    ap.add_argument("--key", default="none")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--streams", default="1,4,16")
    ap.add_argument("--burst", type=int, default=50)
    ap.add_argument("--burst-tokens", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--weights", default="auto", help="the server's --weights; several, comma-separated, "
                    "are run one after the other in this run (e.g. fp32,auto)")
    args = ap.parse_args()
    import openai
    import torch

    def run(url: str) -> dict:
        client = openai.OpenAI(base_url=url, api_key=args.key, max_retries=0, timeout=600)
        client.chat.completions.create(model=args.model, messages=prompt(0), max_tokens=4)  # warm-up
        out = {"model": args.model, "tokens_per_stream": args.tokens, "cpus": os.cpu_count(),
               "cuda": torch.cuda.is_available()}
        for n in [int(x) for x in args.streams.split(",")]:
            out[f"streams_{n}"] = streams(client, args.model, n, args.tokens)
        ns = [int(x) for x in args.streams.split(",")]
        if 1 in ns and 16 in ns:
            out["speedup_16_vs_1"] = round(out["streams_16"]["aggregate_tok_s"] / out["streams_1"]["aggregate_tok_s"], 2)
        out["burst"] = burst(client, args.model, args.burst, args.burst_tokens)
        return out

    if args.url:
        result = run(args.url)
    else:
        result = {}
        for weights in args.weights.split(","):
            with local_server(args.model, args.max_batch, weights=weights) as (url, ready_s):
                result[weights] = run(url)
                result[weights]["server_ready_s"] = round(ready_s, 2)
        if len(result) == 1:
            result = next(iter(result.values()))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
