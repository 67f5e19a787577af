import pytest
from pathlib import Path

from tunelab.config import apply_overrides, load_config
from tunelab.errors import TunelabError


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_and_overrides(tmp_path):
    p = write(tmp_path, "data:\n  train: x.jsonl\n")
    cfg = load_config(p, ["train.lr=1e-4", "method.target_modules=[q_proj,v_proj]", "method.name=qlora"])
    assert cfg.train.lr == 1e-4
    assert cfg.method.target_modules == ["q_proj", "v_proj"]
    assert cfg.method.name == "qlora" and cfg.model.name == "smollm2-135m-instruct"


def test_unknown_key_suggests_closest(tmp_path):
    p = write(tmp_path, "data:\n  train: x.jsonl\ntrain:\n  learning_rat: 1\n")
    with pytest.raises(TunelabError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: train.learning_rat: unknown key - ")
    p = write(tmp_path, "data:\n  train: x.jsonl\ntrain:\n  epoch: 1\n")
    with pytest.raises(TunelabError, match=r"train\.epoch: unknown key - did you mean 'epochs'\?"):
        load_config(p)


def test_bad_value_names_line_and_field(tmp_path):
    p = write(tmp_path, "data:\n  train: x.jsonl\nmethod:\n  name: lora\n  r: 0\n")
    with pytest.raises(TunelabError) as e:
        load_config(p)
    assert f"{p}:5: method.r" in str(e.value)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(TunelabError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    p = write(tmp_path, "data:\n  train: [x\n")
    with pytest.raises(TunelabError, match="invalid YAML"):
        load_config(p)


def test_override_must_be_key_value():
    with pytest.raises(TunelabError, match="not key=value"):
        apply_overrides({}, ["train.lr"])


def test_relative_input_paths_are_read_from_the_config_folder(tmp_path, monkeypatch, capsys):
    """data paths resolve against the config file's folder; the working folder is a fallback with a
    one-line deprecation note; output.dir stays relative to the working folder; a model folder next to
    the config is found from anywhere."""
    from tunelab.config import load_config
    from tunelab.data.dataset import load_splits

    proj, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    (proj / "data").mkdir(parents=True)
    (proj / "tiny-model").mkdir()
    (proj / "tiny-model" / "config.json").write_text("{}")
    (proj / "data" / "train.jsonl").write_text('{"prompt": "q", "completion": "a"}\n' * 3)
    cfg_path = proj / "c.yaml"
    cfg_path.write_text("model: {name: tiny-model}\ndata: {train: data/train.jsonl}\noutput: {name: r}\n")
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(cfg_path)
    train, _ = load_splits(cfg)
    assert len(train) == 3 and cfg.model.name == str((proj / "tiny-model").resolve())
    assert cfg.run_dir() == Path("runs") / "r"  # outputs: where you run tunelab
    assert "note:" not in capsys.readouterr().err

    (elsewhere / "old").mkdir()
    (elsewhere / "old" / "train.jsonl").write_text('{"prompt": "q", "completion": "a"}\n' * 2)
    cfg = load_config(cfg_path, ["data.train=old/train.jsonl"])
    train, _ = load_splits(cfg)
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(train) == 2 and len(err) == 1
    assert err[0].startswith("note: data.train: 'old/train.jsonl' was found in the working folder, not next to the config")
    assert "deprecated" in err[0] and "'../elsewhere/old/train.jsonl'" in err[0]

    cfg = load_config(cfg_path, ["data.train=missing.jsonl"])
    with pytest.raises(TunelabError, match=str(proj / "missing.jsonl")):
        load_splits(cfg)


def test_a_typo_in_an_override_is_blamed_on_the_command_line(tmp_path):
    p = tmp_path / "capitals.yaml"
    p.write_text("data: {train: x.jsonl}\n")
    with pytest.raises(TunelabError) as e:
        load_config(p, ["train.epoch=2"])
    assert str(e.value).startswith("command line: train.epoch: unknown key") and "did you mean 'epochs'" in str(e.value)
    p.write_text("data: {train: x.jsonl}\ntrain: {epoch: 2}\n")
    with pytest.raises(TunelabError, match=r"capitals.yaml: train.epoch: unknown key"):
        load_config(p, ["train.lr=1e-4"])
