"""`tunelab data synth` through the real CLI: SIGKILL mid-run then resume, errors, local teacher, training on the output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from synth_server import ScriptedServer

TUNELAB = [sys.executable, "-m", "tunelab"]
N = 40


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def synth(inp, out, *args):
    return [*TUNELAB, "data", "synth", str(inp), "--out", str(out), "--quiet", *args]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """40 items through a server that takes 50 ms a reply; the CLI is SIGKILLed after >= 8 pairs, then rerun."""
    tmp = tmp_path_factory.mktemp("synth")
    inp = tmp / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"item-{i:03d}", "text": f"a watercolor fox, item-{i:03d}"}) + "\n"
                           for i in range(N)))
    out = tmp / "pairs.jsonl"
    with ScriptedServer(delay_s=0.05) as srv:
        cmd = synth(inp, out, "--base-url", srv.base_url, "--model", "m", "--concurrency", "2", "--backoff", "0.01")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if len(out.read_text().splitlines()) >= 8 if out.exists() else False:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
        before = {r["id"] for r in lines(out)}
        calls_at_kill = srv.total
        resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        calls = dict(srv.calls)
    return tmp, inp, out, before, calls_at_kill, calls, resumed


def test_kill_then_resume_has_no_gaps_or_duplicates(killed_and_resumed):
    tmp, inp, out, before, calls_at_kill, calls, resumed = killed_and_resumed
    assert resumed.returncode == 0, resumed.stderr
    ids = [r["id"] for r in lines(out)]
    assert len(ids) == len(set(ids)) == N
    assert set(ids) == {f"item-{i:03d}" for i in range(N)}
    assert 8 <= len(before) < N
    assert all(calls[i] == 1 for i in before)  # finished items were never asked again
    # the resumed run asked only for what was missing: at most the 2 in flight at the kill are asked twice
    assert sum(calls.values()) <= N + 2 and sum(calls.values()) - calls_at_kill == N - len(before)
    meta = json.loads((tmp / "pairs.synth.json").read_text())
    assert meta["complete"] is True and meta["stats"]["already_done"] == len(before)


def test_output_trains(killed_and_resumed, tiny_model_dir, tmp_path):
    _, _, out, *_ = killed_and_resumed
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""model: {{name: {tiny_model_dir}}}
data: {{train: {out}, max_length: 64}}
method: {{name: lora, r: 4}}
train: {{max_steps: 1, batch_size: 4, lr: 0.001}}
output: {{dir: {tmp_path}/runs, name: synth}}
""")
    r = subprocess.run([*TUNELAB, "train", str(cfg), "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "runs" / "synth" / "DONE").exists()


def test_local_teacher_tiny_llama(tiny_model_dir, tmp_path):
    from tunelab.synth import DEFAULT_PROMPTS, read_items
    from tunelab.infer.generate import Generator

    inp = tmp_path / "in.txt"
    inp.write_text("".join(f"Python one-liner number {i}: print({i})\n" for i in range(5)))
    out = tmp_path / "pairs.jsonl"
    r = subprocess.run(synth(inp, out, "--teacher", str(tiny_model_dir), "--max-new-tokens", "6", "--batch-size", "2",
                             "--min-chars", "1"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    items = read_items(inp, "reverse")[0]
    done = [x["id"] for x in lines(out)] + [x["id"] for x in lines(tmp_path / "pairs.filtered.jsonl")]
    assert sorted(done) == sorted(i.id for i in items)
    meta = json.loads((tmp_path / "pairs.synth.json").read_text())
    gen = Generator.from_model(str(tiny_model_dir))
    want_in = sum(len(gen.prompt_ids([{"role": "user", "content": DEFAULT_PROMPTS["reverse"].replace("{input}", i.text)}])[0])
                  for i in items)
    # the random tiny model never emits its end-of-turn token in 6 steps (greedy), so all 5 x 6 tokens count
    assert meta["stats"]["prompt_tokens"] == want_in
    assert meta["stats"]["completion_tokens"] == 5 * 6
    assert meta["settings"]["teacher"] == f"local {tiny_model_dir}"


@pytest.mark.parametrize("args, fragment", [
    (["--base-url", "http://127.0.0.1:9/v1"], "--base-url needs --model"),
    ([], "give exactly one teacher"),
    (["--teacher", "x", "--base-url", "http://h/v1", "--model", "m"], "give exactly one teacher"),
    (["--teacher", "x", "--prompt", "no placeholder"], "no {input}"),
    (["--teacher", "x", "--mode", "sideways"], "unknown mode"),
    (["--base-url", "http://h/v1", "--model", "m", "--api-key-env", "TUNELAB_NO_SUCH_KEY"], "is not set"),
])
def test_bad_options_one_line_exit_2(tmp_path, args, fragment):
    inp = tmp_path / "in.txt"
    inp.write_text("hello\n")
    r = subprocess.run(synth(inp, tmp_path / "o.jsonl", *args), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    err = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], r.stderr


def test_bad_input_line_named(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "ok"}\n{"text": \n')
    with ScriptedServer() as srv:
        r = subprocess.run(synth(inp, tmp_path / "o.jsonl", "--base-url", srv.base_url, "--model", "m"),
                           capture_output=True, text=True, timeout=120)
        assert srv.total == 0
    assert r.returncode == 2 and f"{inp}:2: invalid JSON" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.jsonl").exists()
