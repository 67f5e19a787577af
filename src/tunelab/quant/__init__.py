"""Quantization lab: codecs (NF4/FP4/int4/int8/ternary), quantized layers, PTQ/QAT, reports.

    from tunelab.quant.nn import QuantLinear, quantize_model
    model = tunelab.quant.load("out/smollm2-nf4")      # a `tunelab quantize` checkpoint
"""

from tunelab.quant.nn import QuantLinear, quantize_model
from tunelab.quant.ptq import load

__all__ = ["QuantLinear", "quantize_model", "load"]
