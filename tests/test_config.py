import pytest

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
