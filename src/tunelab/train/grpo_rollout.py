"""GRPO rollouts: G sampled completions per prompt on the decode engine, the live LoRA kept unmerged.

The engine (infer/decode.py) holds its own copy of the base weights, read once (`DecodeEngine.from_model(
model, merge=False)`); each projection's adapter is a separate (A.T, s B.T) pair. Between optimizer steps
only those pairs are rebuilt from the PEFT model (`refresh_adapters`): per adapted projection
r x (in + out) numbers, against in x out for its base matrix - e.g. SmolLM2-135M's q_proj at r = 16:
16 x 1,152 = 18k numbers against 332k. A method without LoRA layers would need the whole copy per step;
task grpo takes lora and qlora only.

A rollout row: the prompt's ids (repeated G times, consecutive), the completion's ids (the stop token
included when drawn), its text (stop token and special tokens removed) and whether it was truncated
(max_completion_length tokens and no stop token). A rollout also times its two phases: `prefill_s`, from
the call to the first token (the prompts' forward pass, the KV cache written, the first pick), and
`decode_s`, the one-token steps after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunelab.errors import TunelabError


def rollout_engine(model):
    """The decode engine over `model` (PEFT LoRA unmerged); a one-line TunelabError if it cannot run it."""
    from tunelab.infer.decode import DecodeEngine, Unsupported

    try:
        return DecodeEngine.from_model(model, merge=False)
    except Unsupported as e:
        raise TunelabError(f"task grpo samples on the decode engine, which cannot run this model: {e}",
                           where="model.name", hint="pick a Llama-family model (docs/grpo.md)") from None


def _lora_pairs(mod, adapter: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(A [r, in], s B [out, r])] of a PEFT LoRA layer (empty for a plain layer)."""
    if not (hasattr(mod, "lora_A") and adapter in mod.lora_A):
        return []
    a = mod.lora_A[adapter].weight.detach().float()
    return [(a, mod.lora_B[adapter].weight.detach().float() * mod.scaling[adapter])]


def _out(mod) -> int:
    return (mod.base_layer if hasattr(mod, "base_layer") else mod).out_features


def refresh_adapters(engine, model) -> None:
    """Rewrite the engine's unmerged LoRA pairs from `model`'s current adapter weights (the base untouched)."""
    from tunelab.infer.arch import arch_of
    from tunelab.infer.parts import fuse_loras, unwrap

    hf, adapter = unwrap(model)
    _, arch = arch_of(hf.config)
    for blk, layer in zip(engine.w.blocks, hf.model.layers):
        at, mlp = layer.self_attn, layer.mlp
        groups = ((blk.qkv, [getattr(at, n) for n in arch.qkv]), (blk.o, [at.o_proj]),
                  (blk.gate_up, [getattr(mlp, n) for n in arch.gate_up]), (blk.down, [mlp.down_proj]))
        for p, mods in groups:
            fused = fuse_loras([_out(m) for m in mods], [_lora_pairs(m, adapter) for m in mods], engine.w.dtype)
            p.loras = [fused] if fused is not None else []


@dataclass
class Rollout:
    prompt_ids: list[list[int]]  # N = P x G rows, each prompt's G consecutive
    completion_ids: list[list[int]]
    texts: list[str]
    truncated: list[bool]
    prefill_s: float = 0.0
    decode_s: float = 0.0

    @property
    def new_tokens(self) -> int:
        return sum(len(c) for c in self.completion_ids)


def stop_ids(tok, template) -> set[int]:
    """EOS and every stop string of the template that is one token (what `tunelab generate` stops at)."""
    ids = {tok.eos_token_id}
    for s in template.stop_strings:
        t = tok(s, add_special_tokens=False)["input_ids"]
        if len(t) == 1:
            ids.add(t[0])
    return {i for i in ids if i is not None}


def seeded_sampler(temperature: float, top_p: float, seed: int, device: torch.device):
    """infer/sampling.py's Sampler with its generator on the engine's device (multinomial on CUDA
    logits needs a CUDA generator; on the CPU this is the Sampler as it is)."""
    from tunelab.infer.sampling import Sampler

    sampler = Sampler(temperature, top_p, seed)
    if sampler.generator is not None and device.type != "cpu":
        sampler.generator = torch.Generator(device=device)
        sampler.generator.manual_seed(seed)
    return sampler


@torch.no_grad()
def sample(engine, tok, prompts: list[list[int]], group: int, max_new: int, stops: set[int],
           sampler) -> Rollout:
    """G = `group` completions of each prompt, in one batch of P x G rows on the engine."""
    import time

    rows = [p for p in prompts for _ in range(group)]
    outs: list[list[int]] = [[] for _ in rows]
    t0 = time.perf_counter()
    first = None
    with torch.autocast(engine.device.type, enabled=False):  # the engine computes in its own dtype
        for step in engine.steps(rows, max_new, stops, sampler):  # as engine.generate, timed
            if first is None:
                first = time.perf_counter()
            for r, t in enumerate(step):
                if t is not None:
                    outs[r].append(t)
    end = time.perf_counter()
    first = end if first is None else first
    texts = [tok.decode([t for t in o if t not in stops], skip_special_tokens=True).strip() for o in outs]
    truncated = [not (o and o[-1] in stops) for o in outs]
    return Rollout(rows, outs, texts, truncated, first - t0, end - first)
