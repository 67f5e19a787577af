"""The CUDA path end to end, as a user runs it: one JSON verdict on stdout.

    python benchmarks/gpu_check.py [--steps 5] [--work /tmp/gpu_check] [--port 8765]

Stages, each through the `tunelab` CLI of this environment, on the quickstart (examples/configs/quickstart.yaml,
the embedded SmolLM2-135M-Instruct), `--steps` optimizer steps each:

    lora      tunelab train: the quickstart's LoRA (bf16 on the GPU)
    qlora     tunelab train: the same with method qlora on bitsandbytes (quant_backend: bitsandbytes)
    decode    tunelab generate on the lora run (one prompt, 32 new tokens)
    merge     tunelab merge of the qlora run (the 4-bit base dequantized, + the adapter)
    export    tunelab export --to gguf of the lora run (f16)
    serve     tunelab serve --runs (no auth, loopback), then one chat completion through the openai client

Verdict: {"cuda": true, "gpu": name, "torch": ..., "bitsandbytes": ..., "stages": {stage: {"ok": bool,
"seconds": s, "error": the last line of its stderr when it failed}}, "ok": every stage ok}. A stage whose
input failed is reported as skipped (ok false, error names the stage it needed).
Without CUDA it prints {"cuda": false, "reason": ..., "ok": null} and exits 0: nothing to check here.
Exit status 1 when a stage failed on a CUDA machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUNELAB = [sys.executable, "-m", "tunelab"]


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda"] = bool(torch.cuda.is_available())
        if out["cuda"]:
            out["gpu"] = torch.cuda.get_device_name(0)
            out["cuda_runtime"] = torch.version.cuda
    except ImportError as e:
        out["torch"], out["cuda"] = None, False
        out["reason"] = f"torch is not importable: {e}"
    try:
        import bitsandbytes

        out["bitsandbytes"] = bitsandbytes.__version__
    except Exception as e:  # not installed, or its CUDA library failed to load
        out["bitsandbytes"] = None
        out["bitsandbytes_error"] = f"{type(e).__name__}: {e}".splitlines()[0]
    return out


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def run_stage(cmd: list[str], timeout: int) -> dict:
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "seconds": round(time.perf_counter() - t, 1), "error": f"timed out after {timeout} s"}
    out = {"ok": p.returncode == 0, "seconds": round(time.perf_counter() - t, 1)}
    if p.returncode != 0:
        out["error"] = last_line(p.stderr) or last_line(p.stdout) or f"exit {p.returncode}"
    return out


def write_config(work: Path, name: str, method: dict, steps: int) -> Path:
    """The quickstart's config with `method` merged in, `steps` optimizer steps, runs under `work`."""
    import yaml

    src = ROOT / "examples" / "configs" / "quickstart.yaml"
    cfg = yaml.safe_load(src.read_text(encoding="utf-8"))
    for key in ("train", "validation"):  # data paths are relative to the config's folder
        if key in cfg.get("data", {}):
            cfg["data"][key] = str((src.parent / cfg["data"][key]).resolve())
    cfg["method"].update(method)
    cfg["train"].update({"max_steps": steps, "eval_every": "never"})
    cfg["model"]["device"] = "cuda"
    cfg["output"] = {"name": name, "dir": str(work / "runs")}
    cfg.pop("eval", None)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def serve_stage(runs: Path, port: int, timeout: int) -> dict:
    """Start `tunelab serve`, wait for /v1/models, ask the first model one question with the openai client."""
    t = time.perf_counter()
    proc = subprocess.Popen([*TUNELAB, "serve", "--runs", str(runs), "--no-auth", "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        from openai import OpenAI

        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=120)
        models, err = None, ""
        while time.perf_counter() - t < timeout and proc.poll() is None:
            try:
                models = [m.id for m in client.models.list().data]
                break
            except Exception as e:  # not listening yet
                err = f"{type(e).__name__}: {e}"
                time.sleep(2)
        if not models:
            tail = proc.stderr.read() if proc.poll() is not None else ""
            return {"ok": False, "seconds": round(time.perf_counter() - t, 1),
                    "error": last_line(tail) or err or "no model listed"}
        reply = client.chat.completions.create(model=models[0], max_tokens=16,
                                               messages=[{"role": "user", "content": "Is pandas slow?"}])
        text = reply.choices[0].message.content or ""
        return {"ok": bool(text.strip()), "seconds": round(time.perf_counter() - t, 1), "model": models[0],
                "reply": text[:80], **({} if text.strip() else {"error": "empty reply"})}
    except Exception as e:
        return {"ok": False, "seconds": round(time.perf_counter() - t, 1), "error": f"{type(e).__name__}: {e}"[:300]}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--work", default="/tmp/gpu_check")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--timeout", type=int, default=900, help="seconds per stage")
    args = ap.parse_args(argv)

    info = versions()
    if not info.get("cuda"):
        info.setdefault("reason", "no CUDA device (torch.cuda.is_available() is False): nothing to check here")
        print(json.dumps({**info, "ok": None}))
        return 0

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    runs = work / "runs"
    os.environ.setdefault("TUNELAB_HOME", str(Path.home() / ".cache" / "tunelab"))
    stages: dict[str, dict] = {}

    def needs(stage: str, *inputs: str) -> bool:
        bad = [s for s in inputs if not stages.get(s, {}).get("ok")]
        if bad:
            stages[stage] = {"ok": False, "seconds": 0.0, "error": f"skipped: {', '.join(bad)} failed"}
        return not bad

    lora = write_config(work, "gpu-lora", {"name": "lora"}, args.steps)
    qlora = write_config(work, "gpu-qlora", {"name": "qlora", "quant_backend": "bitsandbytes", "quant_type": "nf4"},
                         args.steps)
    stages["lora"] = run_stage([*TUNELAB, "train", str(lora), "--overwrite", "-q"], args.timeout)
    stages["qlora"] = run_stage([*TUNELAB, "train", str(qlora), "--overwrite", "-q"], args.timeout)
    if needs("decode", "lora"):
        stages["decode"] = run_stage([*TUNELAB, "generate", str(runs / "gpu-lora"), "-p", "Is pandas slow?",
                                      "--max-new-tokens", "32"], args.timeout)
    if needs("merge", "qlora"):
        stages["merge"] = run_stage([*TUNELAB, "merge", str(runs / "gpu-qlora"), "--out", str(work / "merged"),
                                     "--overwrite"], args.timeout)
    if needs("export", "lora"):
        stages["export"] = run_stage([*TUNELAB, "export", str(runs / "gpu-lora"), "--to", "gguf",
                                      "--out", str(work / "gguf"), "--overwrite"], args.timeout)
    if needs("serve", "lora"):
        stages["serve"] = serve_stage(runs, free_port(args.port), args.timeout)
    verdict = {**info, "stages": stages, "ok": all(s["ok"] for s in stages.values())}
    print(json.dumps(verdict))
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
