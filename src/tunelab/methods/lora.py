"""lora: LoRA adapters on a frozen full-precision base.

    h = W0 x + (alpha / r) B A x      W0 frozen (the load dtype), A (r x in) and B (out x r) train in fp32
    T = L' r sum(in + out)            trainable params: the adapted Linears of the last L' blocks (`method.layers`)

Saved as a plain PEFT adapter (adapter/), merged as W0 + (alpha/r) B A, served hot-loaded beside a shared
base. Memory: wb N frozen + (4 + 4 + adam) T (memory/estimator.py).
"""

from __future__ import annotations

from tunelab.config import MethodConfig
from tunelab.methods.base import Merge, MemoryTerms, Method, Saved, Served


class Lora(Method):
    name = "lora"
    label = "LoRA"
    adapters = True
    saves = Saved.ADAPTER
    merge = Merge.ADAPTER
    memory = MemoryTerms("lora", trains_all=False)
    exports = ("hf", "gguf", "ollama", "lora-gguf")
    serves_as = Served.ADAPTER

    def adapt(self, model, m: MethodConfig, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None):
        """A fresh LoRA adapter (`adapters.lora.apply_lora`); only it (and `modules_to_save`) trains."""
        from tunelab.adapters.lora import apply_lora

        return apply_lora(model, m, task_type=task_type, modules_to_save=modules_to_save)

    def detail(self, m: MethodConfig) -> str:
        return f" (r={m.r}, alpha={m.alpha:g}, targets={m.target_modules})"
