"""qlora: LoRA adapters on a frozen 4-bit base. The adapter is lora's (plain PEFT); what differs is the base,
one of three small objects picked by the resolved `method.quant_type` and `method.quant_backend`:

    GGUF_BLOCKS   quant_type gguf: a GGUF's own Q4_0/Q4_1/Q8_0/Q4_K/Q6_K blocks, kept as stored
                  (quant/gguf_load.py), on tunelab's backend
    BITSANDBYTES  quant_backend bitsandbytes: loaded 4-bit by transformers + bitsandbytes (CUDA)
    TUNELAB       nf4 | fp4 on tunelab's pure-PyTorch QuantLinear: on CPU streamed (each Linear quantized
                  as its weight is read, quant/stream_load.py), else loaded whole and quantized by
                  `prepare_base`

`resolve` settles the autos, in this order, without touching its input:
    quant_type    auto -> gguf when `quant.gguf_load.wants_gguf_blocks` finds a GGUF of those blocks, else nf4
    quant_backend auto -> tunelab for gguf (the blocks are tunelab's), else `choose_backend`: bitsandbytes
                  on CUDA when it is installed, tunelab elsewhere

Memory: 4.127/8 bytes per block-Linear weight (4 NF4 code + 8/64 absmax + 32/(64 x 256) its fp32 scale;
a GGUF-blocks base: its types' block bytes x 8 / block weights, e.g. Q4_K 4.5, Q6_K 6.5625, memory/base_layout.py)
+ wb per other weight (embeddings and head: 1 + 4/h with `method.embed_quant: int8`, streamed CPU base only)
+ (4 + 4 + adam) T; the base decodes again in backward (no bf16 copies kept).
Merged by decoding the 4-bit base first: W0' = dequant(quant(W0)), then + (alpha/r) B A.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.config import MethodConfig, RunConfig
from tunelab.methods.base import Base, MemoryTerms, Merge
from tunelab.methods.lora import Lora

QLORA_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # 4.127 bits per quantized weight (NF4 + double-quantized absmax)


@dataclass(frozen=True)
class QuantBase:
    """One way qlora's 4-bit base is loaded; `load` returns it (None: load it whole, quantize later)."""

    name: str
    backend: str

    def load(self, cfg: RunConfig, device) -> Base | None:
        raise NotImplementedError


class GgufBlocks(QuantBase):
    def load(self, cfg: RunConfig, device) -> Base | None:
        from tunelab.quant.gguf_load import load_gguf_qlora_base

        kept = load_gguf_qlora_base(cfg, device)
        return None if kept is None else Base(*kept, self.backend, device, quantized=True)


class Bitsandbytes(QuantBase):
    def load(self, cfg: RunConfig, device) -> Base | None:
        model, tok, rm = load_bnb_base(cfg, device)
        return Base(model, tok, rm, self.backend, device)


class TunelabNf4(QuantBase):
    def load(self, cfg: RunConfig, device) -> Base | None:
        """Streamed on CPU; None elsewhere, or for a hub id / a checkpoint without safetensors."""
        if device.type != "cpu":
            return None
        from tunelab.quant.stream_load import load_quantized_causal_lm

        m = cfg.method
        streamed = load_quantized_causal_lm(cfg.model.name, dtype=cfg.model.dtype, quant_type=m.quant_type,
                                            double_quant=m.double_quant, int8_rows=m.embed_quant == "int8")
        return None if streamed is None else Base(*streamed, self.backend, device, quantized=True)


GGUF_BLOCKS = GgufBlocks("gguf blocks", "tunelab")
BITSANDBYTES = Bitsandbytes("bitsandbytes", "bitsandbytes")
TUNELAB = TunelabNf4("tunelab nf4/fp4", "tunelab")


def load_bnb_base(cfg: RunConfig, device):
    """CUDA path: load the base 4-bit through transformers + bitsandbytes."""
    import torch
    from transformers import AutoModelForCausalLM

    from tunelab.adapters.qlora import bnb_quantization_config
    from tunelab.models.load import load_tokenizer
    from tunelab.models.registry import resolve

    rm = resolve(cfg.model.name)
    tok = load_tokenizer(rm)
    compute = torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
    qc = bnb_quantization_config(cfg.method.quant_type, cfg.method.double_quant, compute)
    model = AutoModelForCausalLM.from_pretrained(rm.path, quantization_config=qc, device_map={"": str(device)})
    from peft import prepare_model_for_kbit_training

    # checkpointing is switched on after the adapters (`adapt`), as for every other method
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model, tok, rm


class QLora(Lora):
    name = "qlora"
    label = "QLoRA"
    quantized_base = True
    merge = Merge.DEQUANTIZED_ADAPTER
    memory = MemoryTerms("qlora", trains_all=False, base_bits=QLORA_BITS, base_recomputed=True)
    checkpointing_by_default = True  # the memory-first recipe: 4-bit base + checkpointing

    def resolve(self, cfg: RunConfig) -> RunConfig:
        from tunelab.adapters.qlora import choose_backend
        from tunelab.models.load import pick_device
        from tunelab.quant.gguf_load import wants_gguf_blocks

        m = cfg.method
        quant_type = m.quant_type
        if quant_type == "auto":  # an explicit gguf is checked where it loads (`load_gguf_qlora_base`)
            quant_type = "gguf" if wants_gguf_blocks(cfg) is not None else "nf4"
        backend = "tunelab" if quant_type == "gguf" else choose_backend(m.quant_backend, pick_device(cfg.model.device))
        if (quant_type, backend) == (m.quant_type, m.quant_backend):
            return cfg
        out = cfg.model_copy(deep=True)
        out.method = out.method.model_copy(update={"quant_type": quant_type, "quant_backend": backend})
        return out

    def base_of(self, cfg: RunConfig) -> QuantBase:
        """The base object of a resolved config."""
        if cfg.method.quant_type == "gguf":
            return GGUF_BLOCKS
        return BITSANDBYTES if cfg.method.quant_backend == "bitsandbytes" else TUNELAB

    def load_base(self, cfg: RunConfig) -> Base:
        """The base by `base_of`; loaded whole (and quantized by `prepare_base`) where that base does not
        load 4-bit itself."""
        from tunelab.models.load import load_causal_lm, pick_device

        cfg = self.resolve(cfg)
        device = pick_device(cfg.model.device)
        qb = self.base_of(cfg)
        base = qb.load(cfg, device)
        if base is not None:
            return base
        model, tok, rm = load_causal_lm(cfg.model.name, dtype=cfg.model.dtype, device=cfg.model.device)
        return Base(model, tok, rm, qb.backend, device)

    def prepare_base(self, base: Base, cfg: RunConfig, amp) -> bool:
        """tunelab's backend: the base in 4-bit, frozen, its layers computing in `amp`. A base loaded 4-bit
        (`base.quantized`) is frozen; any other is quantized in place here."""
        if base.backend != "tunelab":
            return False
        from tunelab.adapters.qlora import freeze_quantized_base, quantize_base

        if base.quantized:
            freeze_quantized_base(base.model, compute_dtype=amp)
        else:
            m = self.resolve(cfg).method
            quantize_base(base.model, m.quant_type, m.double_quant, compute_dtype=amp)
        return True

    def inference_base(self, model, m: MethodConfig):
        """The 4-bit base the run trained on (its `method.quant_type`), from its full-precision load."""
        from tunelab.adapters.qlora import quantize_base

        return quantize_base(model, m.quant_type, m.double_quant)
