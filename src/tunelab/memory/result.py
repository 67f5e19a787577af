"""What `tunelab memory` prints: the estimate's parts, their sum, and whether it fits."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MemoryEstimate:
    """Bytes per component; `rows` are (component, bytes, formula) in print order."""

    model: str
    method: str
    batch: int
    seq: int
    grad_checkpointing: bool
    r: int
    optimizer: str
    device: str
    weight_bytes: int  # bytes of one stored (unquantized) weight: 4 fp32, 2 bf16
    params: int
    trainable: int
    weights: int
    gradients: int
    optimizer_states: int
    master_weights: int
    adapters: int
    activations: int
    workspace: int  # bf16 weight copies autograd keeps for backward (see the module docstring)
    transient: int  # the head's logits while the loss runs
    rows: list[tuple[str, int, str]] = field(default_factory=list)
    bytes_per_param_text: str = ""
    block_text: str = ""  # the per-layer-per-token activation formula used
    available: int | None = None  # detected free RAM / VRAM
    device_total: int | None = None
    step_temporaries: int = 0  # AdamW's temporaries during the optimizer step
    recompute: int = 0  # with checkpointing: the one block recomputed in backward (part of activations)
    grad_accum: int = 1
    head_cast: int = 0  # bf16 autocast, fp32 head: the head weight's bf16 cast(s) while the loss runs
    cast_cache: int = 0  # bf16 autocast + checkpointing: autocast's cached bf16 copies of the trainable weights
    decode: int = 0  # qlora: one 4-bit layer's decode buffers (the largest block Linear), while it runs
    process: int = 0  # CPU: the process beside its tensors (interpreter, libraries); 0 on CUDA (VRAM compared)

    @property
    def static(self) -> int:
        """Everything but activations and workspace."""
        return self.weights + self.gradients + self.optimizer_states + self.master_weights + self.adapters

    @property
    def at_loss(self) -> int:
        """What exists only while the loss runs, at the end of the forward: one chunk's logits, the head
        weight's bf16 cast(s), and with checkpointing autocast's cache of bf16 weight copies (without
        checkpointing those copies are the ones autograd keeps: `workspace`)."""
        return self.transient + self.head_cast + self.cast_cache

    @property
    def forward_phase(self) -> int:
        """Memory that lives from the forward pass into backward: activations, weight copies, logits (and
        qlora's decode of one layer, which never runs while the loss does).

        With checkpointing, the recomputed block (its activations and weight copies) exists only in
        backward and the loss's logits (and autocast's cache) only in the forward: the larger counts.
        """
        if self.grad_checkpointing:
            return self.activations - self.recompute + max(self.recompute + self.workspace + self.decode, self.at_loss)
        return self.activations + self.workspace + max(self.at_loss, self.decode)

    @property
    def update_phase(self) -> int:
        """Memory that lives from backward into the optimizer step: gradients and the step's temporaries."""
        return self.gradients + self.step_temporaries

    @property
    def total(self) -> int:
        """The peak: weights, adapters, optimizer states and master weights live throughout; the forward
        phase and the update phase overlap only when gradients accumulate over micro-batches:

            peak = weights + adapters + states + master + max(forward phase, update phase)   (grad_accum 1)
            peak = weights + adapters + states + master + forward phase + update phase       (grad_accum > 1)
        """
        resident = self.weights + self.optimizer_states + self.master_weights + self.adapters
        if self.grad_accum > 1:
            return resident + self.forward_phase + self.update_phase
        return resident + max(self.forward_phase, self.update_phase)

    @property
    def bytes_per_param(self) -> float:
        """static / N: the seed arithmetic's 16 (full), ~4.2 (lora), ~1.2 (qlora)."""
        return self.static / self.params

    @property
    def rss(self) -> int:
        """The process's peak resident memory: the tensors' peak + `process` (CPU)."""
        return self.total + self.process

    @property
    def fits(self) -> bool | None:
        return None if self.available is None else self.rss <= self.available


def fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.1f}M" if n < 1e9 else f"{n / 1e9:.2f}B"
