"""freeze: only the last `method.freeze_layers` blocks and the output head train; everything below is frozen.

Saved, merged, exported and served as a full fine-tune (the whole model in model/); estimated as full
fine-tuning too (an upper bound: the frozen blocks keep no gradients nor optimizer states).
"""

from __future__ import annotations

from tunelab.config import MethodConfig
from tunelab.methods.base import Method


class Freeze(Method):
    name = "freeze"
    label = "partly frozen fine-tune"

    def adapt(self, model, m: MethodConfig, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None):
        from tunelab.adapters.lora import freeze_all_but_last

        freeze_all_but_last(model, m.freeze_layers)
        return model

    def detail(self, m: MethodConfig) -> str:
        return f" (last {m.freeze_layers} layers + head)"
