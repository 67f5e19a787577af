"""Memory of a task-grpo run (train/recipes/grpo.py), from its config: the lora/qlora training estimate
(memory/estimator.py) for the G x P sampled rows, plus what GRPO adds beside it.

    N = G x P rows a step (grpo.num_generations x grpo.prompts_per_step, else train.batch_size)
    S = S_p + C      S_p the longest prompt in tokens (data.train and data.validation, rendered by the
                     run's template), C = grpo.max_completion_length

    policy           estimate(model, method, batch = N, seq = S, target_fraction = 0): frozen base,
                     adapters, gradients, AdamW states, activations and weight copies of the N rows
                     (target_fraction 0: GRPO does not run the fused cross-entropy; its head is below)
    log-probs        N C V x 12: the head on the C completion positions (train/grpo_loss.py) keeps
                     log_softmax's fp32 output (4) for backward; at its peak in backward gather's dense
                     gradient (4) and log_softmax's input gradient (4) sit beside it (the forward's peak,
                     bf16 logits 2 + fp32 copy 4 + / temperature 4, is lower)
                     + V h x 2 under autocast with fp32 weights: the head's bf16 cast, kept for dL/dh
    rollout engine   (sum of the block Linears + V h) x wb_e: the decode engine's own copy
                     (infer/parts.py: fp32 matrices stored transposed, so copied; the fused q/k/v and
                     gate/up are new tensors; a tied head is the embedding transposed, a copy; the
                     embedding itself is shared). wb_e = 4 (the engine computes in fp32)
    KV cache         2 L kv_dim x b x (S_p + C) x wb_e, b = max(N, the held-out pass's batch
                     (train/grpo_heldout.py BATCH, at most the held-out prompts)): it exists while
                     sampling only, never during the training step

    peak = policy (its resident part + the larger of its forward and update phases, + log-probs in the
           forward) + engine copy, with the rollout's KV cache in place of the step when that is larger
    rss  = peak + the process (memory/estimator.PROCESS_BYTES on the CPU)

The engine's prefill activations (one layer of b x S_p tokens at a time) and the LoRA pairs it holds
(r x (in + out) per projection) are left out: a few MB on SmolLM2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.memory.estimator import estimate
from tunelab.memory.result import MemoryEstimate, fmt_bytes
from tunelab.memory.shape import ModelShape

HELDOUT_BATCH = 32  # train/grpo_heldout.py BATCH (the memory layer sits below train: the value, not the import)
ENGINE_BYTES = 4  # the rollout engine's weights and KV cache: fp32


@dataclass
class GrpoMemory:
    policy: MemoryEstimate  # the training step's estimate for N rows of S tokens
    rows: int  # N = G x P
    prompt_tokens: int  # S_p
    completion_tokens: int  # C
    logprobs: int
    head_cast: int
    engine: int
    kv_cache: int
    kv_rows: int
    parts: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def step(self) -> int:
        """The training step's peak above the resident tensors: the larger of the forward (with the
        log-probs) and the update phase (summed when gradients accumulate)."""
        p = self.policy
        fwd = p.forward_phase + self.logprobs + self.head_cast
        return fwd + p.update_phase if p.grad_accum > 1 else max(fwd, p.update_phase)

    @property
    def total(self) -> int:
        p = self.policy
        resident = p.weights + p.optimizer_states + p.master_weights + p.adapters
        return resident + self.engine + max(self.step, self.kv_cache)

    @property
    def rss(self) -> int:
        return self.total + self.policy.process


def prompt_tokens(cfg) -> int:
    """The longest prompt of data.train and data.validation in tokens, as the run renders it (the
    model's tokenizer and data.template, generation prompt added)."""
    from tunelab.data.formats import apply_columns
    from tunelab.data.sources import read_source
    from tunelab.data.templates import build_template
    from tunelab.data.tokenize import encode_segments
    from tunelab.models.load import load_tokenizer
    from tunelab.models.registry import resolve

    tok = load_tokenizer(resolve(cfg.model.name))
    template = build_template(cfg.data.template, tok, cfg.data.system, cfg.data.custom_template)
    longest = 1
    for key in ("train", "validation"):
        source = getattr(cfg.data, key)
        if not source:
            continue
        for k, spec in enumerate(source if isinstance(source, list) else [None]):
            path = source if spec is None else spec.path
            where = f"data.{key}" if spec is None else f"data.{key}[{k}]"
            cols = spec.columns if spec is not None and spec.columns is not None else cfg.data.columns
            for rec in read_source(path, cfg.input_base(path, where), where):
                d = apply_columns(rec, cols).data
                p = d.get("prompt", d.get("messages"))
                msgs = [{"role": "user", "content": p}] if isinstance(p, str) else list(p or [])
                if msgs:
                    ids, _ = encode_segments(tok, template.segments(msgs, add_generation_prompt=True))
                    longest = max(longest, len(ids))
    return longest


def estimate_grpo(cfg, num_generations: int, prompts_per_step: int | None, max_completion_length: int,
                  s_prompt: int | None = None, heldout: int | None = None, detect: bool = False,
                  autocast: bool | None = None) -> GrpoMemory:
    """The memory of the grpo run `cfg` (a RunConfig, task grpo; its `grpo:` numbers validated by the
    caller: train/grpo_config.py sits above this layer) - see the module docstring. `s_prompt`: the
    longest prompt in tokens (None: measured on the data); `heldout`: the number of held-out prompts
    (None: counted from data.validation / data.val_split)."""
    import torch

    from tunelab.memory.shape import read_config
    from tunelab.runtime.precision import autocast_dtype

    n = num_generations * (prompts_per_step or cfg.train.batch_size)
    c = max_completion_length
    sp = prompt_tokens(cfg) if s_prompt is None else s_prompt
    if autocast is None:
        autocast = autocast_dtype(cfg.train.precision, torch.device("cpu")) is not None
    m = cfg.method
    policy = estimate(cfg.model.name, m.name, batch=n, seq=sp + c, r=m.r, optimizer=cfg.train.optim
                      if cfg.train.optim in ("adamw", "adamw8bit") else "adamw", device="cpu",
                      lora_dropout=m.dropout, target_fraction=0.0, autocast=autocast, detect=detect,
                      layers=m.layers, grad_accum=cfg.train.grad_accum)
    shape = ModelShape.from_config(read_config(cfg.model.name)[0])
    v, h = shape.vocab, shape.hidden
    logprobs = n * c * v * 12
    head_cast = v * h * 2 if autocast else 0
    engine = (shape.linear_params + v * h) * ENGINE_BYTES
    if heldout is None:
        heldout = _heldout_count(cfg)
    kv_rows = max(n, min(HELDOUT_BATCH, heldout))
    kv = 2 * shape.layers * shape.kv_dim * kv_rows * (sp + c) * ENGINE_BYTES
    parts = [("policy: resident", policy.weights + policy.optimizer_states + policy.adapters,
              f"lora estimate for N = {n} rows x S = {sp} + {c} tokens: frozen weights, adapters, AdamW"),
             ("policy: forward", policy.forward_phase, "activations + weight copies of the N rows"),
             ("policy: update", policy.update_phase, "gradients + AdamW temporaries"),
             ("log-probs", logprobs, f"N C V x 12 = {n} x {c} x {v:,} x 12"),
             ("head cast", head_cast, "V h x 2 (bf16 cast of the fp32 head, kept for dL/dh)"),
             ("rollout engine copy", engine, f"(block Linears {fmt_bytes(shape.linear_params)} + V h) x 4"),
             ("KV cache (sampling)", kv, f"2 L kv_dim x {kv_rows} rows x {sp + c} x 4")]
    return GrpoMemory(policy, n, sp, c, logprobs, head_cast, engine, kv, kv_rows, parts)


def _heldout_count(cfg) -> int:
    """Held-out prompts: the rows of data.validation, else round(train rows x data.val_split)."""
    from tunelab.data.sources import read_source

    d = cfg.data

    def rows(key: str) -> int:
        source = getattr(d, key)
        paths = [source] if not isinstance(source, list) else [s.path for s in source]
        return sum(len(read_source(p, cfg.input_base(p, f"data.{key}"), f"data.{key}")) for p in paths)

    if d.validation:
        return rows("validation")
    return max(1, round(rows("train") * d.val_split)) if d.val_split else 0
