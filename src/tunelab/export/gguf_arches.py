"""One object per model family for the GGUF export: what llama.cpp's convert_hf_to_gguf.py writes for it.

`GGUF_ARCHES[family.name]` (family: `tunelab.models.families.family_of(config)`) holds

    gguf          general.architecture, the llama.cpp graph that runs the file
    permute_qk    llama's rope rotates adjacent pairs (x[2i], x[2i+1]); q/k rows are interleaved per
                  head (`gguf_tensors.permute_qk`). Every other family here runs NeoX rope in llama.cpp
                  (pairs x[i], x[i + d/2], transformers' rotate_half): rows as they are.
    norm_shift    added to every `*norm.weight`: Gemma's RMSNorm multiplies by (1 + w), llama.cpp's by w,
                  so the file holds w + 1 (transformers' GGUF loader subtracts it again)
    hparams       the family's own `<arch>.*` keys, after the common ones (`common_hparams`)
    fit           what the file cannot say: raises TunelabError (refused) or returns a `Fit` (the
                  context length the file declares and one-line notes)
    extra         generated tensors (llama3's rope_freqs, Phi-3's long/short rope factors)
    tied_output   write output.weight even when the embeddings are tied
    rope_dims     rope.dimension_count (Phi-3: the partially rotated dims)

Sliding windows llama.cpp cannot express: its llama graph has none (Mistral), and gemma2 / gemma3 fix
the layer pattern (every 2nd / every 6th layer global) and gemma3 the local rope base (10000). Where a
config differs, every context up to the window is still the same computation (a window of W over at
most W tokens is full attention), so the file declares context_length = W and says so in a note:
exact for every context it declares, rather than refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from tunelab.errors import TunelabError

WHERE = "GGUF export"


@dataclass
class Fit:
    """What the file declares: context_length (may be capped at a sliding window) and notes (one line each)."""

    context: int
    notes: list[str] = field(default_factory=list)

    def cap(self, window: int, why: str) -> None:
        if window and window < self.context:
            self.context = window
            self.notes.append(f"{why}: context_length capped at the window ({window}), where the file is exact")


def head_dim(cfg: dict) -> int:
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def rope_params(cfg: dict, layer_type: str = "full_attention") -> tuple[float, dict]:
    """(rope theta, scaling dict) from either config spelling (rope_parameters, possibly one dict per
    layer type as Gemma 3 writes it, or rope_theta/rope_scaling)."""
    rp = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if isinstance(rp.get(layer_type), dict):
        rp = dict(rp[layer_type])
    theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
    return float(theta), rp


def rope_type(rp: dict) -> str:
    return rp.get("rope_type", rp.get("type")) or "default"


def _refuse(family: str, what: str, hint: str = "") -> None:
    raise TunelabError(f"{family}: {what}, which llama.cpp's GGUF cannot express", where=WHERE,
                       hint=hint or "export with --to hf (safetensors) instead")


# ---- the keys every family writes (TextModel.set_gguf_parameters) -----------------------------------------------
def common_hparams(writer, cfg: dict, fit: Fit, ftype: int) -> None:
    """context_length, embedding_length, block_count, feed_forward_length, head_count(_kv),
    rope.freq_base (of the global layers), layer_norm_rms_epsilon, vocab_size, key/value_length (when
    the config names head_dim), file_type; rope.dimension_count is the family's (`GgufArch.rope_dims`)."""
    try:
        theta, _ = rope_params(cfg)
        writer.add_context_length(fit.context)
        writer.add_embedding_length(cfg["hidden_size"])
        writer.add_block_count(cfg["num_hidden_layers"])
        writer.add_feed_forward_length(cfg["intermediate_size"])
        writer.add_head_count(cfg["num_attention_heads"])
        writer.add_head_count_kv(cfg.get("num_key_value_heads") or cfg["num_attention_heads"])
        writer.add_rope_freq_base(theta)
        writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        writer.add_vocab_size(cfg["vocab_size"])
    except KeyError as e:
        raise TunelabError(f"config.json lacks {e.args[0]}", where=WHERE) from None
    if cfg.get("head_dim"):
        writer.add_key_length(cfg["head_dim"])
        writer.add_value_length(cfg["head_dim"])
    writer.add_file_type(ftype)


def _no_hparams(writer, cfg: dict) -> None:
    """Nothing beyond the common keys."""


def _no_extra(cfg: dict) -> list:
    return []


def _plain_fit(family: str) -> Callable[[dict], Fit]:
    def fit(cfg: dict) -> Fit:
        _, rp = rope_params(cfg)
        if rope_type(rp) != "default":
            _refuse(family, f"rope scaling '{rope_type(rp)}'")
        return Fit(cfg["max_position_embeddings"])
    return fit


# ---- llama / llama3 / mistral ---------------------------------------------------------------------------------------
def _llama_fit(cfg: dict) -> Fit:
    _, rp = rope_params(cfg)
    if rope_type(rp) not in ("default", "llama3", "linear"):
        _refuse("llama", f"rope scaling '{rope_type(rp)}'")
    return Fit(cfg["max_position_embeddings"])


def _llama_hparams(writer, cfg: dict) -> None:
    """LlamaModel: linear rope scaling as rope.scaling.{type, factor}; llama3 scaling is the rope_freqs tensor."""
    import gguf

    _, rp = rope_params(cfg)
    if rope_type(rp) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rp["factor"])


def llama3_rope_freqs(cfg: dict):
    """rope_freqs of Llama 3.1 scaling (LlamaModel.generate_extra_tensors): per frequency f_i = theta^(-2i/d),
    wavelength L = 2 pi / f_i, old context C, factors lo / hi:
        L < C/hi -> 1;   L > C/lo -> factor;   else 1 / ((1 - s)/factor + s), s = (C/L - lo) / (hi - lo)
    llama.cpp divides f_i by the value; transformers' llama3 inv_freq is f_i times (1 - s)/factor + s."""
    import numpy as np

    theta, rp = rope_params(cfg)
    if rope_type(rp) != "llama3":
        return []
    dim = head_dim(cfg)
    freqs = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, low, high = rp.get("factor", 8.0), rp.get("low_freq_factor", 1.0), rp.get("high_freq_factor", 4.0)
    old_ctx = rp.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return [("rope_freqs.weight", np.array(out, dtype=np.float32))]


def _mistral_fit(cfg: dict) -> Fit:
    """llama.cpp converts MistralForCausalLM as "llama", whose graph has no sliding window."""
    fit = _llama_fit(cfg)
    window = cfg.get("sliding_window")
    if window:
        fit.cap(window, f"mistral: sliding window {window} (llama.cpp's llama graph attends to the whole context)")
    return fit


# ---- gemma2 / gemma3 ---------------------------------------------------------------------------------------------
def _gemma_scale_check(family: str, cfg: dict, big_layers: int) -> None:
    """llama.cpp scales scores by 1/sqrt(key_length), or 1/sqrt(hidden/heads) for the 27B layer count;
    transformers by query_pre_attn_scalar^-1/2."""
    want = cfg["hidden_size"] // cfg["num_attention_heads"] if cfg["num_hidden_layers"] == big_layers else head_dim(cfg)
    if cfg.get("query_pre_attn_scalar", want) != want:
        _refuse(family, f"query_pre_attn_scalar {cfg['query_pre_attn_scalar']} (llama.cpp uses {want})")


def _layer_pattern_fit(family: str, cfg: dict, every: int, same_rope: bool = True) -> Fit:
    """llama.cpp's fixed pattern: layer i global iff (i + 1) % every == 0, the rest sliding. Another
    pattern is exact up to the window (context capped) when both layer kinds share one rope; when they
    do not (gemma3: local base 10000, global rope.freq_base) a layer of the wrong kind rotates with the
    wrong base at every position, so it is refused."""
    fit = Fit(cfg["max_position_embeddings"])
    n = cfg["num_hidden_layers"]
    want = ["full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(n)]
    have = cfg.get("layer_types") or want
    if have != want and cfg.get("sliding_window"):
        first = next(i for i, (a, b) in enumerate(zip(have, want)) if a != b)
        what = (f"layer {first} is {have[first]} where llama.cpp's {family} (every {every}th layer global) "
                f"has {want[first]}")
        if not same_rope:
            _refuse(family, what + " with another rope base")
        fit.cap(cfg["sliding_window"], f"{family}: {what}")
    return fit


def _gemma2_fit(cfg: dict) -> Fit:
    _gemma_scale_check("gemma2", cfg, 46)
    if cfg.get("attn_logit_softcapping") is None:
        _refuse("gemma2", "no attention soft-capping (llama.cpp's gemma2 always caps, at 50 by default)")
    _, rp = rope_params(cfg)
    if rope_type(rp) != "default":
        _refuse("gemma2", f"rope scaling '{rope_type(rp)}'")
    return _layer_pattern_fit("gemma2", cfg, 2)


def _gemma2_hparams(writer, cfg: dict) -> None:
    """Gemma2Model: attn/final logit soft-capping and the sliding window."""
    writer.add_attn_logit_softcapping(cfg["attn_logit_softcapping"])
    writer.add_final_logit_softcapping(cfg["final_logit_softcapping"])
    writer.add_sliding_window(cfg["sliding_window"])


def _gemma3_fit(cfg: dict) -> Fit:
    _gemma_scale_check("gemma3", cfg, 62)
    if cfg.get("attn_logit_softcapping") is not None:
        _refuse("gemma3", "attention soft-capping")
    local_theta, local = rope_params(cfg, "sliding_attention")
    local_theta = float(cfg.get("rope_local_base_freq", local_theta))
    if local_theta != 10000.0 or rope_type(local) != "default":
        _refuse("gemma3", f"local rope base {local_theta:g} ({rope_type(local)}); llama.cpp's gemma3 fixes 10000")
    _, rp = rope_params(cfg)
    if rope_type(rp) not in ("default", "linear"):
        _refuse("gemma3", f"rope scaling '{rope_type(rp)}'")
    global_theta, _ = rope_params(cfg)
    return _layer_pattern_fit("gemma3", cfg, 6, same_rope=global_theta == local_theta and rope_type(rp) == "default")


def _gemma3_hparams(writer, cfg: dict) -> None:
    """Gemma3Model: final soft-capping when set, the sliding window, the global layers' linear rope scaling."""
    import gguf

    if cfg.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(cfg["final_logit_softcapping"])
    writer.add_sliding_window(cfg["sliding_window"])
    _, rp = rope_params(cfg)
    if rope_type(rp) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rp["factor"])


# ---- phi3 ----------------------------------------------------------------------------------------------------------
def _phi3_fit(cfg: dict) -> Fit:
    _, rp = rope_params(cfg)
    if rope_type(rp) not in ("default", "longrope", "su"):
        _refuse("phi3", f"rope scaling '{rope_type(rp)}'")
    return Fit(cfg["max_position_embeddings"])


def _phi3_rope_dims(cfg: dict) -> int:
    _, rp = rope_params(cfg)
    rot = rp.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    return int(rot * cfg["hidden_size"]) // cfg["num_attention_heads"]


def _phi3_hparams(writer, cfg: dict) -> None:
    """Phi3MiniModel: rope.scaling.original_context_length, rope.dimension_count (partial rotary), the
    sliding window (0: none), and rope.scaling.attn_factor for long-rope checkpoints."""
    _, rp = rope_params(cfg)
    orig = rp.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings"))
    writer.add_rope_scaling_orig_ctx_len(orig or cfg["max_position_embeddings"])
    writer.add_sliding_window(cfg.get("sliding_window") or 0)
    if rp.get("long_factor"):
        scale = cfg["max_position_embeddings"] / orig
        writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1 else 1.0)


def _phi3_extra(cfg: dict) -> list:
    """rope_factors_long / rope_factors_short (one per rotated pair) of a long-rope Phi-3."""
    import numpy as np

    _, rp = rope_params(cfg)
    if not rp.get("long_factor"):
        return []
    long, short = rp["long_factor"], rp["short_factor"]
    if len(long) != len(short) or 2 * len(long) != _phi3_rope_dims(cfg):
        _refuse("phi3", f"long-rope factors of length {len(long)}/{len(short)} for {_phi3_rope_dims(cfg)} rotated dims")
    return [("rope_factors_long.weight", np.array(long, dtype=np.float32)),
            ("rope_factors_short.weight", np.array(short, dtype=np.float32))]


@dataclass(frozen=True)
class GgufArch:
    family: str  # tunelab.models.families.Family.name
    gguf: str  # general.architecture
    permute_qk: bool = False
    norm_shift: float = 0.0
    hparams: Callable[..., None] = _no_hparams
    fit: Callable[[dict], Fit] | None = None
    extra: Callable[[dict], list] = _no_extra
    tied_output: bool = False
    rope_dims: Callable[[dict], int] = head_dim  # rope.dimension_count

    def check(self, cfg: dict) -> Fit:
        return (self.fit or _plain_fit(self.family))(cfg)


GGUF_ARCHES: dict[str, GgufArch] = {a.family: a for a in [
    GgufArch("llama", "llama", permute_qk=True, hparams=_llama_hparams, fit=_llama_fit),
    GgufArch("llama3", "llama", permute_qk=True, hparams=_llama_hparams, fit=_llama_fit, extra=llama3_rope_freqs),
    GgufArch("mistral", "llama", permute_qk=True, hparams=_llama_hparams, fit=_mistral_fit),
    GgufArch("qwen2", "qwen2"),
    GgufArch("qwen3", "qwen3"),
    GgufArch("gemma2", "gemma2", norm_shift=1.0, hparams=_gemma2_hparams, fit=_gemma2_fit),
    GgufArch("gemma3", "gemma3", norm_shift=1.0, hparams=_gemma3_hparams, fit=_gemma3_fit),
    GgufArch("phi3", "phi3", hparams=_phi3_hparams, fit=_phi3_fit, extra=_phi3_extra, rope_dims=_phi3_rope_dims),
    # every OLMo 2 release is untied: a tied one gets its output.weight too, so the file does not lean on
    # a loader's tied-embedding fallback
    GgufArch("olmo2", "olmo2", tied_output=True),
]}


def arch_of(cfg: dict, where: str = WHERE) -> GgufArch:
    """The GgufArch of a config.json dict: its family (families.family_of) when config.architectures names
    that family's CausalLM class; TunelabError naming the architecture otherwise."""
    from tunelab.models.families import family_of

    names = cfg.get("architectures") or []
    label = names[0] if names else cfg.get("model_type")
    try:
        family = family_of(cfg, where=where)
    except TunelabError:
        family = None
    arch = GGUF_ARCHES.get(family.name) if family is not None else None
    if arch is None or (names and names[0] != family.architecture):
        raise TunelabError(f"architecture {label} is not supported for GGUF", where=where,
                           hint=f"supported: {', '.join(sorted(GGUF_ARCHES))}")
    return arch
