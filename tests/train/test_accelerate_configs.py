"""examples/accelerate/: each config parses with accelerate's launcher, sets the environment the
workers read (train/distributed.py: accelerate_kind), and the engine answers FSDP / DeepSpeed with one line.
No GPU here: the launch itself is not run, the arguments and environment accelerate derives are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "accelerate"


def _launch_env(name: str) -> tuple[object, dict]:
    from accelerate.commands.launch import (
        _validate_launch_command,
        launch_command_parser,
    )
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / f"{name}.yaml"), "-m", "tunelab",
                                               "train", "run.yaml"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = list(defaults.deepspeed_config.keys())
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return args, env


@pytest.mark.parametrize("name, kind, machines, processes", [
    ("ddp", None, 1, 2), ("two_machines", None, 2, 8), ("fsdp", "fsdp", 1, 2),
    ("deepspeed_zero2", "deepspeed", 1, 2), ("deepspeed_zero3", "deepspeed", 1, 2)])
def test_config_parses_and_names_its_engine(name, kind, machines, processes, monkeypatch):
    from tunelab.train import distributed

    args, env = _launch_env(name)
    assert (args.num_machines, args.num_processes) == (machines, processes)
    for key in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if key.startswith("ACCELERATE_USE_"):
            monkeypatch.setenv(key, value)
    assert distributed.accelerate_kind() == kind
    if name.startswith("deepspeed"):
        assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == name[-1]
    if name == "two_machines":
        assert (args.main_process_ip, args.main_process_port, args.machine_rank) == ("10.0.0.1", 29500, 0)


def test_engine_refuses_fsdp_with_one_line(monkeypatch, tiny_lora):
    from tunelab.config import TrainConfig
    from tunelab.errors import TunelabError
    from tunelab.train.engine import Trainer
    from tunelab.train.objective import CausalLMObjective

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(TunelabError, match="applies to the TRL tasks"):
        Trainer(tiny_lora(), [], [], TrainConfig(), CausalLMObjective(0))
