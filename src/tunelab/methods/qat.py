"""qat: quantization-aware training. Every Linear but the head trains as an fp32 latent W while the
forward sees Q(W) in `method.qat_format` (straight-through estimator: dL/dW = dL/dQ(W)).

Saved as the real quantized model, packed (quantized/, quant/ptq.py's format): it computes what the
fake-quantized one computed in training. Nothing to merge or export as a transformers model; served as
its own model. Estimated as full fine-tuning (every weight trains).
"""

from __future__ import annotations

from pathlib import Path

from tunelab.config import MethodConfig
from tunelab.methods.base import Merge, Method, Saved


class Qat(Method):
    name = "qat"
    label = "quantization-aware fine-tune"
    saves = Saved.QUANTIZED
    merge = Merge.NONE
    exports = ()
    save_writes_tokenizer = True

    def adapt(self, model, m: MethodConfig, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None):
        from tunelab.quant.qat import prepare_qat

        prepare_qat(model, m.qat_format)
        return model

    def save(self, model, out: Path, tokenizer=None, source: str = "") -> None:
        """The packed quantized model (`convert_qat`), with the tokenizer, into `out`."""
        from tunelab.quant import ptq
        from tunelab.quant.qat import convert_qat

        ptq.save(convert_qat(model), out, tokenizer=tokenizer, source=source)
