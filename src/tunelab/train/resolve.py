"""resolve(cfg): every `auto` of a run settled once, before anything loads, to what training then uses.

    train.precision               auto -> bf16 | fp16 | fp32: the autocast `runtime.precision.autocast_dtype`
                                  picks on the run's device (CUDA: bf16, or fp16 without bf16; a CPU with
                                  native bf16 matmuls: bf16; otherwise fp32)
    train.gradient_checkpointing  auto -> true | false: `activation_ckpt.decide` (on for a method that
                                  checkpoints by default, qlora; else on only when the memory estimate of
                                  the model's config.json does not fit; the TRL tasks, dpo and reward, never
                                  estimate: off)
    train.keep_freed_memory       auto -> true (the engine keeps freed buffers on CPU whenever it is not false)
    method.*                      the method's own autos: `methods.method_of(cfg).resolve(cfg)` (qlora:
                                  quant_type auto -> gguf | nf4, quant_backend auto -> tunelab | bitsandbytes)

The recipes call it right after `setup_run`, so config.yaml (written by `begin_run`) records the resolved
values and `runs.open` reads back exactly the run that trained. The values are the ones the code chose
before this step existed, so training is unchanged; only the moment of the gradient-checkpointing
decision moved: before the model loads, against the memory available then (the estimate counts the
weights itself).

Not resolved here, and why: `data.template: auto` means the model's own chat template, whose resolved
form is template.json (written beside config.yaml; `Run.template()`); `method.layers` has no auto (a number
of last blocks, or all); `model.dtype` / `model.device` auto stay: they say where a run is loaded, which a
run read back on another machine decides again.

`settle_recorded(saved, cfg)` lets a run recorded before resolve() existed (autos in its config.yaml) be
compared with a resolved config, for resuming it.
"""

from __future__ import annotations

from tunelab.config import RunConfig, from_dict
from tunelab.errors import TunelabError

RESOLVED = (("train", "precision"), ("train", "gradient_checkpointing"), ("train", "keep_freed_memory"),
            ("method", "quant_type"), ("method", "quant_backend"))
NO_ESTIMATE_TASKS = ("dpo", "reward")  # TRL trains them: checkpointing auto was never estimated there


def method_autos(cfg: RunConfig) -> RunConfig:
    """`cfg` with the method's autos settled (`methods.Method.resolve`); `cfg` is not changed."""
    from tunelab.methods import method_of

    return method_of(cfg).resolve(cfg)


def precision_of(cfg: RunConfig, device) -> str:
    """train.precision settled on `device`: the name of the autocast dtype it gives (fp32: none)."""
    import torch

    from tunelab.runtime.precision import autocast_dtype

    amp = autocast_dtype(cfg.train.precision, device)
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]


def checkpointing_of(cfg: RunConfig, device) -> bool:
    """train.gradient_checkpointing settled for this run on `device` (`activation_ckpt.decide`)."""
    from tunelab.train.activation_ckpt import decide

    if cfg.train.gradient_checkpointing != "auto":
        return bool(cfg.train.gradient_checkpointing)
    from tunelab.methods import method_of

    model_config = None  # qlora checkpoints without an estimate, so its base (a GGUF's blocks) is not read here
    if cfg.task not in NO_ESTIMATE_TASKS and not method_of(cfg).checkpointing_by_default:
        from tunelab.errors import TunelabError
        from tunelab.memory.shape import read_config

        try:
            model_config, _ = read_config(cfg.model.name)
        except TunelabError:
            model_config = None  # the estimate cannot be made: as for an unsupported shape, off
    return decide(cfg, model_config, device)


def resolve(cfg: RunConfig) -> RunConfig:
    """`cfg` with every auto above settled; `cfg` itself is not changed. Idempotent: a resolved config is
    returned equal to itself."""
    from tunelab.models.load import pick_device

    cfg = method_autos(cfg).model_copy(deep=True)
    device = pick_device(cfg.model.device)
    t = cfg.train
    t.precision = precision_of(cfg, device)
    t.keep_freed_memory = True if t.keep_freed_memory == "auto" else t.keep_freed_memory
    t.gradient_checkpointing = checkpointing_of(cfg, device)  # after precision: the estimate asks about autocast
    return cfg


def settle_recorded(saved: dict, cfg: RunConfig) -> dict:
    """config.yaml's mapping `saved` with each of RESOLVED that it recorded as auto (a run started before
    resolve() existed) taken from `cfg`, the resolved config it is compared with, and each setting of a
    recorded section that the file lacks (added to tunelab after the run started) at its default
    (settled as loading a config settles it)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in saved.items()}
    now = cfg.model_dump(mode="json")
    for section, key in RESOLVED:
        if (out.get(section) or {}).get(key) == "auto":
            out[section][key] = now[section][key]
    added = []  # a setting added after the run was recorded: its default, settled as loading settles it
    for section, recorded in out.items():
        model = getattr(cfg, section, None)
        if not isinstance(recorded, dict) or not hasattr(type(model), "model_fields"):
            continue
        for key, field in type(model).model_fields.items():
            if key not in recorded and not field.is_required():
                value = field.get_default(call_default_factory=True)
                recorded[key] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
                added.append((section, key))
    if added:
        try:
            loaded = from_dict(out).model_dump(mode="json")
        except TunelabError:  # the comparison then names what differs
            return out
        for section, key in added:
            out[section][key] = loaded[section][key]
    return out
