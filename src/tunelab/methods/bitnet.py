"""bitnet: BitNet b1.58 training. Every Linear but the head becomes a BitLinear: weights ternary
{-1, 0, +1} x mean|W|, activations int8 per token, both through straight-through estimators.

Saved, loaded back and served like qat (the packed quantized model in quantized/).
"""

from __future__ import annotations

from tunelab.config import MethodConfig
from tunelab.methods.qat import Qat


class BitNet(Qat):
    name = "bitnet"
    label = "BitNet b1.58 fine-tune"

    def adapt(self, model, m: MethodConfig, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None):
        from tunelab.quant.qat import to_bitnet

        to_bitnet(model)
        return model
