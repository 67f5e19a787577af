"""Quantization lab: codecs (NF4/FP4/int4/int8/ternary), quantized layers, PTQ/QAT, reports.

    from tunelab.quant.nn import QuantLinear, quantize_model
"""

from tunelab.quant.nn import QuantLinear, quantize_model

__all__ = ["QuantLinear", "quantize_model"]
