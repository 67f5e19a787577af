"""Adapters: PEFT LoRA configs on full-precision or quantized bases, trainable counts, merging."""
