"""Server render time of each Studio page with 100 runs present (target: under 300 ms each).

    python benchmarks/studio_render.py [--runs 100] [--repeat 10]

Builds a serve home in a temp folder: N synthetic finished runs (the config.yaml tunelab writes,
a metrics.jsonl of 300 training rows and 3 evaluation rows, a report.md with a 20-prompt table), one
job per run, a 32-example training file, a knowledge base of the Tolvaris docs (MiniLM), a tiny
random Llama as the base (the inspect page tokenizes with it). Then it requests each page the way a
browser loads it (the shell, then its fragments and JSON calls, in-process through FastAPI's
TestClient) and times the whole: `cold_ms` is the first load (empty caches), `median_ms` / `max_ms`
over --repeat loads. The baseline, in the same run, is the same pages with 3 runs present.
Prints JSON; `ok` is true when every page's cold and median times are under the target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_MS = 300.0
TRAIN = ROOT / "examples/data/tunebot/train.jsonl"
KB_DOCS = ROOT / "examples/data/knowledge-tolvaris/docs"


def make_runs(root: Path, n: int, model: str) -> None:
    from tunelab.config import dump_config, from_dict

    cfg = dump_config(from_dict({"model": {"name": model}, "data": {"train": "train.jsonl"}}))
    report = "# Run\n\n- model: `m`\n\n## Held-out prompts\n\n| prompt | base | tuned |\n|---|---|---|\n" + "".join(
        f"| prompt {i} with some words | a base reply of a few words {i} | a tuned reply<br>—TuneBot |\n"
        for i in range(20))
    for i in range(n):
        d = root / f"run-{i:03d}"
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(cfg)
        rows = [{"step": s, "epoch": round(s / 100, 3), "loss": 4 - s / 100, "lr": 1e-4, "grad_norm": 1.0,
                 "tokens_per_s": 50.0, "elapsed_s": s * 0.5} for s in range(1, 301)]
        rows += [{"step": 100 * e, "epoch": e, "val_loss": 3.5 - e / 10} for e in (1, 2, 3)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "report.md").write_text(report)
        (d / "DONE").write_text("")


def make_jobs(state, n: int, model: str) -> None:
    from tunelab.serve import jobs_db

    c = jobs_db.conn(state.db_path)
    for i in range(n):
        jobs_db.insert_job(c, {
            "id": jobs_db.new_id("ftjob"), "tenant": "default", "model": model, "training_file": "file-x",
            "validation_file": None, "method": {"type": "supervised"}, "suffix": None, "seed": i, "metadata": None,
            "hyperparameters": {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 1.0},
            "status": "succeeded", "run_name": f"run-{i:03d}", "created_at": jobs_db.now()})


def pages(file_id: str, job_id: str) -> dict[str, list[str]]:
    """page -> the requests a browser makes to show it (shell first)."""
    return {
        "home": ["/", "/studio/api/whoami", "/studio/f/jobs?limit=5", "/studio/f/runs?limit=5"],
        "runs": ["/runs", "/studio/api/whoami", "/studio/f/runs"],
        "run": ["/runs/run-000", "/studio/api/whoami", "/studio/f/runs/run-000", "/studio/api/runs/run-000/metrics"],
        "compare (3 runs)": ["/compare?runs=run-000&runs=run-001&runs=run-002", "/studio/api/whoami"]
                            + [f"/studio/api/runs/run-00{i}/metrics" for i in range(3)],
        "datasets": ["/datasets", "/studio/api/whoami", "/studio/f/files"],
        "dataset inspect (32 examples)": [f"/datasets/{file_id}", "/studio/api/whoami",
                                          f"/studio/f/files/{file_id}/inspect"],
        "new fine-tune": ["/new", "/studio/api/whoami", "/studio/f/new"],
        "jobs": ["/jobs", "/studio/api/whoami", "/studio/f/jobs"],
        "job": [f"/jobs/{job_id}", "/studio/api/whoami", f"/v1/fine_tuning/jobs/{job_id}"],
        "chat": ["/chat", "/studio/api/whoami", "/studio/api/kbs"],
        "knowledge bases": ["/kb", "/studio/api/whoami", "/studio/f/kbs"],
        "knowledge base": ["/kb/tolvaris", "/studio/api/whoami", "/studio/f/kbs/tolvaris"],
    }


def measure(n_runs: int, repeat: int, tmp: Path, model: str) -> dict:
    from fastapi.testclient import TestClient

    from tunelab.rag.indexer import index
    from tunelab.serve import jobs_db
    from tunelab.serve.app import create_app
    from tunelab.serve.state import ServeState

    state = ServeState(home=tmp / "home", runs=tmp / "runs", base=model, auth=False, kb=tmp / "kb")
    make_runs(state.runs, n_runs, model)
    make_jobs(state, n_runs, model)
    index([KB_DOCS], directory=state.kb / "tolvaris")
    out = {}
    with TestClient(create_app(state, pool=object())) as client:
        lines = "".join(TRAIN.read_text(encoding="utf-8").splitlines(keepends=True)[:32]).encode()
        fid = client.post("/v1/files", files={"file": ("train.jsonl", lines)}, data={"purpose": "fine-tune"}).json()["id"]
        job = jobs_db.page(jobs_db.conn(state.db_path), "jobs", "tenant = ?", ("default",), None, 1, kind="job")[0][0]
        for name, urls in pages(fid, job["id"]).items():
            times = []
            for _ in range(repeat + 1):
                t0 = time.perf_counter()
                for u in urls:
                    r = client.get(u)
                    if r.status_code != 200:
                        sys.exit(f"{u}: {r.status_code} {r.text[:200]}")
                times.append((time.perf_counter() - t0) * 1000)
            out[name] = {"cold_ms": round(times[0], 1), "median_ms": round(statistics.median(times[1:]), 1),
                         "max_ms": round(max(times[1:]), 1), "requests": len(urls)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from tunelab.models.tiny import build_tiny_llama

    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        model = str(build_tiny_llama(Path(tmp) / "tiny-llama"))
        base = measure(3, args.repeat, Path(tmp) / "few", model)  # 3: the compare page overlays 3 runs
        full = measure(args.runs, args.repeat, Path(tmp) / "many", model)
    result = {"benchmark": "studio_render", "runs": args.runs, "repeat": args.repeat, "target_ms": TARGET_MS,
              "load_average": [round(x, 2) for x in os.getloadavg()],
              "pages": {k: {**v, "baseline_3_runs_median_ms": base[k]["median_ms"]} for k, v in full.items()},
              "ok": all(v["cold_ms"] < TARGET_MS and v["median_ms"] < TARGET_MS for v in full.values())}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
