"""Every malformed file in tests/data/bad/ through the real CLI (in-process): exit 2, one error line naming
the file, the line (where there is one), the field and what is wrong; no traceback; no run directory."""

from pathlib import Path

import pytest

from tunelab.cli.main import run

BAD = Path(__file__).parent / "bad"

# file, task, extra overrides, expected phrase, line marker (None: a whole-file error), field named
CASES = [
    ("truncated_line.jsonl", "sft", [], "invalid JSON", ":2:", "data.train"),
    ("wrong_type.jsonl", "sft", [], "must be a string, got int", ":1:", "'completion'"),
    ("empty.jsonl", "sft", [], "the dataset is empty", None, "data.train"),
    ("missing_columns.csv", "sft", [], "cannot tell the record format", ":2:", "'answer'"),
    ("unknown_format.xml", "sft", [], "unsupported file type '.xml'", None, "data.train"),
    ("label_not_in_set.jsonl", "classify", ["classify.labels=[pos, neg]"], "'neutral' is not in classify.labels",
     ":3:", "field 'label'"),
    ("empty_assistant_turn.jsonl", "sft", [], "empty assistant reply", ":2:", "messages[3].content"),
    ("non_utf8.jsonl", "sft", [], "not valid UTF-8 (byte 0xe9)", ":2:", "data.train"),
    ("ragged_rows.csv", "sft", [], "row has 3 fields, the header has 2", ":3:", "data.train"),
    ("roles_out_of_order.jsonl", "sft", [], "roles out of order: turn 2 is 'user'", ":2:", "messages"),
    ("preference_missing_rejected.jsonl", "dpo", [], "missing field 'rejected'", ":1:", "'rejected'"),
    ("sharegpt_unknown_from.jsonl", "sft", [], "from 'bot' is not one of", ":1:", "conversations[1]"),
    ("parquet_missing_label.parquet", "classify", [], "missing field 'label'", ":row 1:", "'label'"),
    ("no_text_files", "pretrain", [], "no text (.txt, .md) or data files in directory", None, "data.train"),
    ("not_an_object.jsonl", "sft", [], "expected a JSON object, got list", ":1:", "data.train"),
    ("invalid.json", "sft", [], "invalid JSON (Expecting ',' delimiter)", ":3:", "data.train"),
    ("label_wrong_type.jsonl", "classify", [], "must be a string, integer or boolean, got list", ":1:", "'label'"),
    ("pretrain_empty_text.jsonl", "pretrain", [], "field 'text' is empty", ":2:", "'text'"),
    ("preference_identical.jsonl", "reward", [], "are identical", ":1:", "'chosen' and 'rejected'"),
    ("preference_prompt_ends_with_assistant.jsonl", "dpo", [], "must end with a user message", ":1:", "prompt"),
    ("system_not_first.jsonl", "sft", [], "a system message may only come first", ":1:", "messages[2]"),
    ("json_not_a_list.json", "sft", [], "expected a JSON list of objects", None, "data.train"),
    ("unknown_role.jsonl", "sft", [], "role 'bot' is not one of", ":1:", "messages[0]"),
    ("columns_missing.jsonl", "sft", ["data.columns={prompt: question, completion: answer}"],
     "missing column 'answer'", ":1:", "'completion'"),
    ("preference_chosen_two_messages.jsonl", "dpo", [], "must be a string or a single assistant message", ":1:",
     "'chosen'"),
    ("alpaca_missing_output.jsonl", "sft", ["data.format=alpaca"], "missing field 'output'", ":1:", "'output'"),
    ("corrupt.parquet", "sft", [], "cannot read Parquet", None, "data.train"),
    ("messages_not_a_list.jsonl", "sft", [], "field 'messages' must be a non-empty list", ":1:", "'messages'"),
    ("tool_call_unknown_function.jsonl", "sft", [], "function 'get_time' is not in the record's tools", ":1:",
     "messages[1].tool_calls[0]"),
    ("tool_arguments_invalid_json.jsonl", "sft", [], "is not valid JSON (Expecting value)", ":2:",
     "messages[1].tool_calls[0].function.arguments"),
    ("tool_result_without_call.jsonl", "sft", [], "tool result with no matching call (tool_call_id 'call_9')", ":1:",
     "messages[2]"),
]


def test_every_bad_file_has_a_case():
    assert sorted(p.name for p in BAD.iterdir()) == sorted(c[0] for c in CASES) and len(CASES) >= 20


@pytest.mark.parametrize("name, task, extra, phrase, line, field", CASES, ids=[c[0] for c in CASES])
def test_bad_file_fails_with_one_clear_line(name, task, extra, phrase, line, field, tmp_path, tiny_model_dir, capsys):
    bad = BAD / name
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"task: {task}\nmodel: {{name: {tiny_model_dir}}}\ndata:\n  train: {bad}\n"
                   f"train: {{max_steps: 2, batch_size: 2}}\noutput: {{dir: {tmp_path}/runs, name: bad}}\n")
    # sft goes through `tunelab train`; the other tasks through `tunelab data inspect` (same loader)
    argv = ["train", str(cfg), "--quiet", *extra] if task == "sft" else ["data", "inspect", str(cfg), *extra]
    with pytest.raises(SystemExit) as e:
        run(argv)
    out, err = capsys.readouterr()
    assert e.value.code == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    msg = lines[0]
    assert str(bad) in msg and phrase in msg and field in msg, msg
    if line:
        assert f"{bad}{line}" in msg, msg
    assert "Traceback" not in err + out
    assert not (tmp_path / "runs").exists()
