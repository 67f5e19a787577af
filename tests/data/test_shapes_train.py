"""Every sft record shape trains end to end (tiny model, 2 steps) into a finished run (DONE)."""

import json

import pytest

from tunelab.cli.main import run

QA = [(f"What is {i} plus {i}?", f"{i} plus {i} is {2 * i}.") for i in range(6)]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def _messages(d):
    return _jsonl(d / "m.jsonl", [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                                  for q, a in QA])


def _data(kind, d):
    """(data: section as YAML, for the shape `kind`)."""
    if kind == "messages":
        return f"train: {_messages(d)}"
    if kind == "sharegpt":
        return "train: " + _jsonl(d / "s.jsonl", [{"conversations": [{"from": "human", "value": q},
                                                                      {"from": "gpt", "value": a}]} for q, a in QA])
    if kind == "alpaca":
        return "train: " + _jsonl(d / "a.jsonl", [{"instruction": q, "input": "", "output": a} for q, a in QA])
    if kind == "prompt_completion":
        return "train: " + _jsonl(d / "p.jsonl", [{"prompt": q, "completion": a} for q, a in QA])
    if kind == "columns":
        path = _jsonl(d / "c.jsonl", [{"question": q, "answer": a} for q, a in QA])
        return f"train: {path}\n  columns: {{prompt: question, completion: answer}}"
    if kind == "parquet":
        return "train: " + _parquet(d / "p.parquet", [{"prompt": q, "completion": a} for q, a in QA])
    assert kind == "mixed"
    pc = _jsonl(d / "p.jsonl", [{"prompt": f"Say {i}.", "completion": f"{i}."} for i in (1, 2, 3) * 2])  # 3 dups
    return (f"train:\n    - {{path: {_messages(d)}, weight: 0.5}}\n    - {{path: {pc}, weight: 2}}\n"
            "  dedupe: true")


@pytest.mark.parametrize("kind", ["messages", "sharegpt", "alpaca", "prompt_completion", "columns", "parquet",
                                  "mixed"])
def test_shape_trains_to_done(kind, tmp_path, tiny_model_dir, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name: {tiny_model_dir}}}\ndata:\n  {_data(kind, tmp_path)}\n  val_split: 0.2\n"
                   f"  max_length: 64\nmethod: {{name: lora, r: 2}}\ntrain: {{max_steps: 2, batch_size: 2}}\n"
                   f"output: {{dir: {tmp_path}/runs, name: {kind}}}\n")
    with pytest.raises(SystemExit) as e:
        run(["train", str(cfg), "--quiet"])
    out, err = capsys.readouterr()
    assert e.value.code == 0, err
    r = tmp_path / "runs" / kind
    assert (r / "DONE").exists() and (r / "adapter" / "adapter_config.json").exists()
    assert "2 steps" in out
