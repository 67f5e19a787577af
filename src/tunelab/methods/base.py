"""The contract of a training method: one `Method` subclass per method, one instance in the registry.

A method is what `method.name` selects: lora, qlora, full, freeze, qat, bitnet. Everything that differs
between them lives on its object, and every other part asks it instead of comparing the name:

    resolve(cfg) -> RunConfig       its own `auto`s settled (qlora: quant_type, quant_backend), the input
                                    left unchanged; called once, before anything loads
    load_base(cfg) -> Base          the model it trains, loaded (4-bit for qlora)
    prepare_base(base, cfg, amp)    what is done to the loaded base before adapting (qlora on tunelab's
                                    backend: quantize / freeze it); True when something was done
    adapt(model, m, task_type, modules_to_save) -> model
                                    its trainable parameters put in place (LoRA adapters, the last blocks,
                                    fake-quantized latents, or every weight as loaded)
    save(model, out, tokenizer, source)
                                    its weights written into `out` (the run folder part `saves` names)
    inference_base(model, m)        an adapter run's base for inference, from the full-precision load (qlora:
                                    the 4-bit base it trained on)
    detail(m) -> str                the parenthetical reports and cards put after its name

and the declarative facts that higher layers read (memory, export, serve, reports):

    adapters          trains LoRA adapters on a frozen base, saved as a plain PEFT adapter
    quantized_base    its frozen base is 4-bit in training (and is decoded before a merge)
    saves             which part of a run folder its weights are (Saved: adapter | model | quantized)
    merge             how a run of it becomes one model (Merge)
    memory            its terms in the memory estimate (MemoryTerms, read by memory/estimator.py)
    checkpointing_by_default   train.gradient_checkpointing auto -> on without looking at the estimate
    exports           the export targets a run of it can be written as
    serves_as         how `tunelab serve` can serve a run of it (Served)

Methods import only the layers at or below `adapters` (docs/design.md, "Layers"); a part above them
(runs, memory, train, export, serve) reads these facts and never asks the method for code of its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from tunelab.config import MethodConfig, RunConfig


class Saved(enum.Enum):
    """The part of a run folder a method's weights are saved in (the value is the folder's name)."""

    ADAPTER = "adapter"      # a plain PEFT adapter: adapter_config.json + adapter_model.safetensors
    MODEL = "model"          # the whole model, transformers' save_pretrained
    QUANTIZED = "quantized"  # the packed quantized model (quant/ptq.py's format)


class Merge(enum.Enum):
    """How a run becomes one model (`tunelab merge`, export/merge.py)."""

    ADAPTER = "adapter"                  # base + (alpha/r) B A, in fp32
    DEQUANTIZED_ADAPTER = "dequantized"  # the 4-bit base decoded first: W0' = dequant(quant(W0)), then + (alpha/r) B A
    WHOLE = "whole"                      # model/ is already one model: re-saved in the export dtype
    NONE = "none"                        # nothing to merge into a transformers model (packed quantized runs)


class Served(enum.Enum):
    """How `tunelab serve` serves a run."""

    ADAPTER = "adapter"  # hot-loaded beside the shared base (serve/adapters.py)
    MODEL = "model"      # its own weights, loaded as a base


@dataclass(frozen=True)
class MemoryTerms:
    """A method's terms in the memory estimate (memory/estimator.py has the formulas; N params, T adapter params):

    label           the method the estimate is made and reported as (freeze, qat and bitnet: as full)
    trains_all      every weight trains: gradients wb N, fp32 master under bf16 weights, optimizer adam N,
                    all L blocks in backward, the head's dL/dW (V h x 4); False: LoRA, T = L' r sum(in + out)
                    trains in fp32 (4 + 4 + adam) T on a frozen base
    base_bits       bits per stored block-Linear weight of the frozen base, None: the load dtype (wb x 8)
                    (qlora: 4 + 8/64 + 32/(64 x 256) = 4.127, NF4 + double-quantized absmax)
    base_recomputed the frozen base decodes its weights again in backward: no bf16 copies of them are kept,
                    one layer's decode is alive at a time (largest in x out, x (2 + act):
                    the int32 index is freed before the in-place multiply)
    """

    label: str
    trains_all: bool
    base_bits: float | None = None
    base_recomputed: bool = False


@dataclass
class Base:
    """A loaded causal LM with its tokenizer, resolved model and 4-bit backend (None: not qlora)."""

    model: object
    tok: object
    rm: object
    backend: str | None
    device: torch.device
    quantized: bool = False  # already 4-bit as loaded (the streamed CPU QLoRA load, GGUF blocks)

    @property
    def before_step(self):
        """The engine's `before_step`: bitsandbytes' CPU inference repacking undone before training steps."""
        if self.backend != "bitsandbytes":
            return None
        from tunelab.adapters.qlora import restore_bnb_training_layout

        return restore_bnb_training_layout


class Method:
    """One training method (the module docstring states the contract). Subclasses set the facts and
    override the steps that differ; the defaults are full fine-tuning's: load as `model.dtype`, adapt
    nothing, save the whole model."""

    name: ClassVar[str]
    label: ClassVar[str]  # how a model card names what it publishes ("LoRA adapter", ...)
    adapters: ClassVar[bool] = False
    quantized_base: ClassVar[bool] = False
    saves: ClassVar[Saved] = Saved.MODEL
    merge: ClassVar[Merge] = Merge.WHOLE
    memory: ClassVar[MemoryTerms] = MemoryTerms("full", trains_all=True)
    checkpointing_by_default: ClassVar[bool] = False
    exports: ClassVar[tuple[str, ...]] = ("hf", "gguf", "ollama")
    serves_as: ClassVar[Served] = Served.MODEL
    save_writes_tokenizer: ClassVar[bool] = False  # True: `save` writes the tokenizer itself (no chat template)

    # ---- config ----------------------------------------------------------------------------------------------
    def resolve(self, cfg: RunConfig) -> RunConfig:
        """`cfg` with this method's `auto`s settled; `cfg` itself is never changed (returned as is when
        the method has none)."""
        return cfg

    # ---- training --------------------------------------------------------------------------------------------
    def load_base(self, cfg: RunConfig) -> Base:
        """The causal LM of `model.name`, loaded as `model.dtype` on `model.device`."""
        from tunelab.models.load import load_causal_lm, pick_device

        device = pick_device(cfg.model.device)
        model, tok, rm = load_causal_lm(cfg.model.name, dtype=cfg.model.dtype, device=cfg.model.device)
        return Base(model, tok, rm, None, device)

    def prepare_base(self, base: Base, cfg: RunConfig, amp) -> bool:
        """Make the loaded base what training needs before `adapt`; True when anything was done."""
        return False

    def adapt(self, model, m: MethodConfig, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None):
        """Put the trainable parameters in place; returns the model to train (full: every weight, as is)."""
        return model

    def trainable(self, model) -> str:
        """e.g. 'trainable: 1.6M / 134.5M (1.2%)'."""
        from tunelab.adapters.lora import trainable_summary

        return trainable_summary(model)

    def detail(self, m: MethodConfig) -> str:
        """What a report puts after the method's name, e.g. ' (r=16, alpha=32, targets=all-linear)'."""
        return ""

    # ---- saving and loading back -----------------------------------------------------------------------------
    def save(self, model, out: Path, tokenizer=None, source: str = "") -> None:
        """Write the trained weights into `out` (the caller writes the tokenizer unless
        `save_writes_tokenizer`)."""
        model.save_pretrained(str(out))

    def inference_base(self, model, m: MethodConfig):
        """A run's base for inference from its full-precision load (`m`: the run's method section)."""
        return model

    def __repr__(self) -> str:
        return f"<method {self.name}>"
