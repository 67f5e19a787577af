"""A trained run calls tools through the server: the official openai client gets `message.tool_calls`,
plain and streamed, from a tiny Llama that learned a handful of tool records (template chatml, Hermes
<tool_call> blocks), and a plain reply where its records have none.

`tunelab eval` on the same records scores the run's calls (eval/tool_calls, generated locally) against its base's.
Public API only: `tunelab.train` on a dict config, the server app of `tunelab serve` on the run's model, the
openai client with `tools=`, the `tunelab eval` command.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import pytest

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}
RECORDS = [
    {"tools": TOOLS, "messages": [{"role": "user", "content": "Weather in Oslo?"}, CALL]},
    {"tools": TOOLS, "messages": [{"role": "user", "content": "Hello!"},
                                 {"role": "assistant", "content": "Hi there."}]},
]


@contextlib.contextmanager
def _serve(state):
    """The `tunelab serve` app under uvicorn in a thread on a free loopback port; yields its /v1 URL."""
    import uvicorn

    from tunelab.serve.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert th.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        srv.should_exit = True
        th.join(15)


@pytest.fixture(scope="module")
def tools_server(tmp_path_factory, tiny_model_dir):
    import tunelab
    from tunelab.serve.state import ServeState

    tmp = tmp_path_factory.mktemp("tools_trained")
    data = tmp / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS * 4))  # 8 rows: 4 batches of 2 per epoch
    # full fine-tuning: the tiny model's LoRA barely moves its loss in this many steps (5.9 -> 5.5 at r 16,
    # lr 2e-2, 150 steps); all its weights at lr 1e-2 reach a loss of ~0.01 by step ~110
    out = tunelab.train({
        "model": {"name": str(tiny_model_dir)},
        "data": {"train": str(data), "template": "chatml", "max_length": 1024},
        "method": {"name": "full"},
        "train": {"lr": 1e-2, "max_steps": 150, "batch_size": 2, "eval_every": "never", "precision": "fp32",
                  "warmup_ratio": 0.0, "scheduler": "constant"},
        "output": {"dir": str(tmp / "runs"), "name": "tools-tiny"},
        "eval": {"from_validation": 0},
    }, quiet=True)
    # a full run is served as the base: its model/ folder, whose tokenizer carries the trained template
    model = str(out.run_dir / "model")
    state = ServeState(home=tmp / "home", runs=tmp / "runs", base=model, max_adapters=1, kb=tmp / "kb", auth=False)
    with _serve(state) as url:
        import openai

        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)
        yield {"client": client, "model": model, "run": out.run_dir, "data": data}


def _ask(client, model, text, **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], tools=TOOLS,
                                          temperature=0, max_tokens=80, **kw)


def test_a_trained_run_returns_tool_calls(tools_server):
    client, model = tools_server["client"], tools_server["model"]
    r = _ask(client, model, "Weather in Oslo?")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert len(calls) == 1 and calls[0].type == "function" and calls[0].id
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Oslo"}
    assert not choice.message.content
    # a record without a call: a plain reply, no tool_calls
    r = _ask(client, model, "Hello!")
    assert r.choices[0].message.tool_calls in (None, []) and r.choices[0].message.content == "Hi there."
    assert r.choices[0].finish_reason == "stop"


def test_a_trained_run_streams_tool_calls(tools_server):
    client, model = tools_server["client"], tools_server["model"]
    calls: dict[int, dict] = {}
    content, finish = "", None
    for chunk in _ask(client, model, "Weather in Oslo?", stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for d in delta.tool_calls or []:
            c = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            c["id"] = d.id or c["id"]
            if d.function is not None:
                c["name"] += d.function.name or ""
                c["arguments"] += d.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and not content.strip()
    assert list(calls) == [0] and calls[0]["id"] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Oslo"}


def test_tunelab_eval_scores_the_runs_tool_calls(tools_server, tmp_path, capsys):
    from tunelab.cli.main import run as tunelab

    def cli(*args) -> int:
        with pytest.raises(SystemExit) as e:
            tunelab(["eval", *map(str, args)])
        return e.value.code

    data = tmp_path / "two.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert cli(tools_server["run"], "--base", "--data", data, "--out", tmp_path / "out", "--json") in (0, None)
    res = json.loads(capsys.readouterr().out)
    assert res["task"] == "tool_calls" and res["n_examples"] == 2 and res["n_need_call"] == 1
    tuned, base = res["models"]
    assert tuned["kind"] == "run" and base["kind"] == "base"
    assert tuned["metrics"]["needed_exact"]["value"] == 1.0 and tuned["metrics"]["none_right"]["value"] == 1.0
    assert tuned["metrics"]["call_exact"] == {"value": 1.0, "low": 1.0, "high": 1.0, "n": 2}
    assert base["metrics"]["needed_exact"]["value"] == 0.0  # the random base never writes the call
    assert (tmp_path / "out" / "report.md").is_file() and (tmp_path / "out" / "report.html").is_file()
    # options of reply scoring do not apply to a tools file: one line, exit 2
    assert cli(tools_server["run"], "--data", data, "--contains", "x", "--out", tmp_path / "o2") == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "--contains does not apply to a tools file" in err[0]
