"""Ctrl-C outside the training loop (while the model loads) exits 130 with one line, as inside it."""

import pytest

from tunelab.cli.main import run


def test_ctrl_c_while_the_model_loads_exits_130_with_a_line(tmp_path, monkeypatch, capsys):
    from tunelab.train.recipes import sft

    def loading(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(sft, "load_base", loading)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{train: {tmp_path / 'd.jsonl'}}}\noutput: {{dir: {tmp_path}/runs, name: r}}\n")
    (tmp_path / "d.jsonl").write_text('{"prompt": "q", "completion": "a"}\n' * 4)
    with pytest.raises(SystemExit) as e:
        run(["train", str(cfg), "--quiet"])
    assert e.value.code == 130
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert err == ["interrupted before the first checkpoint: nothing saved; run the same command again to start over"]


def test_a_command_stopped_by_ctrl_c_exits_130(monkeypatch, capsys):
    from tunelab.cli.app import app
    from tunelab.cli.main import _mount

    def stopped() -> None:
        raise KeyboardInterrupt

    _mount()
    command = next(c for c in app.registered_commands if c.name == "models")
    monkeypatch.setattr(command, "callback", stopped)
    with pytest.raises(SystemExit) as e:
        run(["models"])
    assert e.value.code == 130 and capsys.readouterr().err.strip() == "interrupted"
