"""Quantization lab: codecs (NF4/FP4/int4/int8/ternary), quantized layers, PTQ/QAT (the per-format
report, an evaluation, is `tunelab.eval.quantization`).

    from tunelab.quant.nn import QuantLinear, quantize_model
    model = tunelab.quant.load("out/smollm2-nf4")      # a `tunelab quantize` checkpoint

The names below load on first use, so importing a light submodule (e.g. `tunelab.quant.bnb_compat`,
installed before peft is imported) does not import torch.
"""

__all__ = ["QuantLinear", "quantize_model", "load"]


def __getattr__(name: str):
    if name in ("QuantLinear", "quantize_model"):
        from tunelab.quant import nn

        return getattr(nn, name)
    if name == "load":
        from tunelab.quant.ptq import load

        return load
    raise AttributeError(f"module 'tunelab.quant' has no attribute {name!r}")
