"""A qat / bitnet run's packed model (RUN/quantized/) written back as a plain transformers folder, for the GGUF
writer: every QuantLinear becomes an nn.Linear holding exactly the weights it computes with,

    W' = gamma * q,  q in {-1, 0, +1}   (ternary: a BitNet b1.58 run; gamma = mean |W| of the tensor)
    W' = the format's decode            (a qat run: int8 / int4 / nf4 / fp4)

with the tokenizer and the run's chat template. A BitNet run exported `--quant tq1_0 | tq2_0` stores q
exactly and gamma as each 256-weight block's fp16 scale (export/gguf_quants.py checks the weights are ternary).
What the file cannot carry: the per-token int8 rounding of the activations BitLinear trained with (llama.cpp's
TQ kernels round activations to int8 per 256-value block instead, Q8_K).
"""

from __future__ import annotations

from pathlib import Path


def write_decoded(run, out: Path) -> int:
    """Write `run`'s (a runs.Run) packed model decoded to fp32 Linears into the new folder `out`; returns the
    number of decoded layers."""
    import torch
    from torch import nn
    from transformers import AutoTokenizer

    from tunelab.quant import ptq
    from tunelab.quant.nn import QuantLinear, replace_linears
    from tunelab.runs.rundir import save_tokenizer_with_template

    model = ptq.load(run.quantized_dir)

    def plain(_name: str, q: QuantLinear) -> nn.Linear:
        lin = nn.Linear(q.in_features, q.out_features, bias=q.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(q.dequantize_weight(torch.float32))
            if q.bias is not None:
                lin.bias.copy_(q.bias.float())
        return lin

    decoded = replace_linears(model, plain, skip=(), types=(QuantLinear,))
    model = model.float()
    model.config.dtype = torch.float32
    out.mkdir(parents=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(str(run.quantized_dir))
    save_tokenizer_with_template(tok, out, run.template_path)
    return len(decoded)
