"""The Python API: what `import tunelab` offers, the same work as the commands.

    import tunelab
    out = tunelab.train("examples/configs/quickstart.yaml")     # tunelab train CONFIG
    bot = tunelab.load(out.run_dir)                              # a Generator (sft/pretrain/dpo) or a Classifier
    bot.reply([{"role": "user", "content": "hi"}])               # tunelab generate / chat
    tunelab.quantize("smollm2-135m-instruct", "nf4", out="q4")   # tunelab quantize MODEL --format nf4 --out q4
    tunelab.rag.query("notes", "how do I ...?")                  # tunelab rag ... (the subpackage)

`tunelab.train` is the training subpackage, made callable (src/tunelab/train/__init__.py says why);
`train` here is the same function. Nothing heavy is imported until a function runs: `import tunelab`
does not import torch or transformers. Errors are one-line `TunelabError`s, as on the command line.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.train import run as train

__all__ = ["load", "quantize", "train"]

LOADABLE = ("sft", "pretrain", "dpo", "classify")  # the run tasks `load` serves


def load(run: str | Path, device: str = "auto"):
    """The trained model of the finished run at `run`, ready to use.

    sft, pretrain and dpo runs give a `tunelab.infer.generate.Generator` (`chat("hi")`,
    `chat(messages, stream=True)` an iterator of text pieces, `reply_batch`: base + adapter + the
    run's template, decoded on tunelab's engine); classify runs a
    `tunelab.infer.classify.Classifier` (`predict(texts)`, `logits`). Anything else (a missing
    folder, not a run, an unfinished run, a reward run) raises a one-line TunelabError."""
    from tunelab.runs.kinds import GENERATIVE_TASKS, require_run

    found, _ = require_run(run, LOADABLE, "tunelab.load", where="run")
    if found.task in GENERATIVE_TASKS:
        from tunelab.infer.generate import Generator

        return Generator.from_run(run, device=device)
    from tunelab.infer.classify_ensemble import load_classifier

    return load_classifier(run, device=device)


def quantize(model, fmt: str = "nf4", out: str | Path | None = None, *, double_quant: bool = False,
             skip: tuple[str, ...] = ("lm_head",), calibrate: str | None = None, blocksize: int = 64,
             rest_dtype: str = "bf16", tokenizer=None):
    """Post-training quantization of every Linear layer (except `skip`) to `fmt`; returns the model.

    model: a model alias, local folder or .gguf (loaded in fp32 on the CPU, as `tunelab quantize`
    does), or a loaded causal LM (quantized in place). fmt: nf4 | fp4 | int4 | int8 | ternary;
    double_quant: 8-bit absmax constants (4-bit formats); calibrate: int8 clipping per row (minmax |
    percentile | mse); blocksize: weights per absmax constant; rest_dtype: bf16 | fp16 | fp32 for the
    tensors left unquantized. With `out`, also writes the packed checkpoint there (model.safetensors,
    manifest.json, config, tokenizer), which `tunelab.quant.load(out)` reloads bit for bit."""
    from tunelab.models.load import DTYPES
    from tunelab.quant import ptq

    ptq.check_options(fmt, rest_dtype, blocksize, out)
    skip = (skip,) if isinstance(skip, str) else tuple(skip)
    source = str(getattr(getattr(model, "config", None), "name_or_path", "") or "")
    if isinstance(model, (str, Path)):
        from tunelab.models.load import load_causal_lm
        from tunelab.runs.kinds import refuse_run

        source = str(model)
        refuse_run(source, "tunelab.quantize", where="model")
        model, loaded_tok, _ = load_causal_lm(source, dtype="fp32", device="cpu", where="model")
        tokenizer = tokenizer if tokenizer is not None else loaded_tok
    ptq.quantize(model, fmt, double_quant, skip, blocksize, calibrate, DTYPES[rest_dtype])
    if out is not None:
        ptq.save(model, out, tokenizer, source=source,
                 extra={"format": fmt, "double_quant": double_quant, "skip": list(skip), "calibrate": calibrate,
                        "blocksize": blocksize, "rest_dtype": rest_dtype})
    return model
