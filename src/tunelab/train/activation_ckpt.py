"""Gradient checkpointing: on, off, or decided for the run (`train.gradient_checkpointing: auto`).

Checkpointing keeps only each block's input during the forward and recomputes the block in
backward: activations drop from B S L block to B S (L h x 4 + block) bytes (memory/estimator.py), for
one extra forward of the blocks that need a gradient. With LoRA on the last N blocks only
(`method.layers`), the blocks below need none, so the extra forward is N/L of the model:
SmolLM2-135M, 8 of 30 blocks -> 8/30 = 27% of one forward (what that costs a step:
docs/performance.md, "Where the time goes").

auto decides (once, before the model loads: `decide`, called by train/resolve.py):
    qlora                     on (QLoRA is the memory-first recipe: 4-bit base + checkpointing)
    lora, full, freeze, ...   on only when the memory estimate at (batch_size, max_length) does not
                              fit in 80% of the memory available now; off otherwise (faster)

Checkpointing is non-reentrant (`use_reentrant=False`), so the embeddings' output need not
require grad: blocks below the adapted ones still record no autograd graph. Its `context_fn` is
`ops.unpad.replay_context`: what a training call changes in the blocks for that call only (the
MLP unpadding hooks) is put back around each block's recompute, so those per-call savings stay on
under checkpointing (`replays_per_call_state`).
"""

from __future__ import annotations

from tunelab.config import RunConfig
from tunelab.methods import method_of

FIT_SHARE = 0.8  # leave 20% of the available memory to the rest of the process and the OS


def estimate_fits(model, cfg: RunConfig) -> bool | None:
    """Does the training estimate without checkpointing fit? None when the model shape is not supported."""
    return config_fits(model.config.to_dict(), cfg, next(model.parameters()).device)


def config_fits(model_config: dict, cfg: RunConfig, device) -> bool | None:
    """`estimate_fits` for a model's config.json (`model_config`) trained on `device`, before it loads."""
    from tunelab.errors import TunelabError
    from tunelab.runtime.precision import autocast_dtype
    from tunelab.memory.available import detect_memory
    from tunelab.memory.estimator import estimate
    from tunelab.train.optim import memory_optimizer

    method = method_of(cfg).memory.label  # freeze, qat, bitnet: estimated as full fine-tuning
    try:
        est = estimate(model_config, method, batch=cfg.train.batch_size, seq=cfg.data.max_length,
                       r=cfg.method.r, lora_dropout=cfg.method.dropout, layers=cfg.method.layers, detect=False,
                       grad_accum=cfg.train.grad_accum, device=device.type,
                       optimizer=memory_optimizer(cfg.train.optim),
                       autocast=autocast_dtype(cfg.train.precision, device) is not None)
    except (TunelabError, KeyError, TypeError):
        return None
    _, _, available = detect_memory(device.type)
    return None if available is None else est.total <= FIT_SHARE * available


def decide(cfg: RunConfig, model_config: dict | None, device) -> bool:
    """`train.gradient_checkpointing` (true | false | auto) for this run before its model loads
    (`train/resolve.py`): auto is on for a method that checkpoints by default (qlora), else on only
    when the estimate of `model_config` (None: no estimate, off) does not fit on `device`."""
    setting = cfg.train.gradient_checkpointing
    if setting != "auto":
        return bool(setting)
    if method_of(cfg).checkpointing_by_default:  # qlora
        return True
    return model_config is not None and config_fits(model_config, cfg, device) is False


def wants_checkpointing(cfg: RunConfig, model=None) -> bool:
    """`train.gradient_checkpointing` for this run (and model, when given: its config is estimated). A
    resolved config (train/resolve.py) is true or false already, so this only reads it."""
    if model is None:
        return decide(cfg, None, None)
    return decide(cfg, model.config.to_dict(), next(model.parameters()).device)


def enable(model) -> None:
    """Non-reentrant checkpointing of every transformer block (HF model or a peft model around one).

    Call it after the adapters are in place. transformers' `gradient_checkpointing_enable` (and
    peft's model wrapper) also make the embeddings' output require grad, which reentrant
    checkpointing needs; non-reentrant does not, and that flag would make autograd record every
    block and backpropagate through all of them even when only the last N have adapters (what that
    cost a QLoRA step: docs/performance.md, "The levers, measured"). So it is switched off again here.
    """
    from tunelab.ops.recompute import replay_context

    kwargs = {"use_reentrant": False, "context_fn": replay_context}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if hasattr(model, "disable_input_require_grads"):
        model.disable_input_require_grads()


