"""Training memory, estimated from a model's config.json alone (no weights are loaded).

    peak = weights + adapters + optimizer states + master weights
         + max(activations + weight copies + what the loss holds,   the forward phase, freed in backward
               gradients + optimizer step temporaries)              the update phase
    (a sum instead of the max when gradients accumulate over micro-batches: grad_accum > 1)
    what the loss holds = one chunk's logits (+ under bf16 autocast: the head's bf16 cast, and with
                          checkpointing autocast's cache of the trainable weights' bf16 copies)

Parameters come from the config's shapes (Llama-family decoders: llama, mistral, qwen2, qwen3, gemma):

    N = V h (embeddings) + L [ h (q + 2 kv) + q h  (attention)  + 3 h I (gate, up, down)  + 2 h (norms) ]
        + h (final norm) + V h (output head, unless tied)       q = heads x head_dim, kv = kv_heads x head_dim

e.g. SmolLM2-135M: 49,152 x 576 + 30 x (576 x (576 + 2 x 192) + 576 x 576 + 3 x 576 x 1,536 + 2 x 576) + 576
   = 28,311,552 + 30 x 3,540,096 + 576 = 134,515,008.

Bytes per parameter, the seed arithmetic (wb = bytes of a stored weight: fp32 4 on CPU, bf16 2 on CUDA,
tunelab's own defaults; adam = 8 for AdamW's fp32 m and v, 2 + 8/256 for 8-bit AdamW):

    full   wb (weights) + wb (grads) + adam + 4 (fp32 master copy, only when wb < 4)   = 16  (either way:
           4 + 4 + 8 on CPU, 2 + 2 + 8 + 4 mixed precision on CUDA)
    lora   wb (frozen base) + (4 + 4 + adam) T / N   adapters train in fp32: weight, grad, m, v
           T = r sum(in + out) over the adapted Linears (all 7 projections of every block)
    qlora  4.127/8 per block-Linear weight + wb per other weight (embeddings, norms, untied head)
           + (4 + 4 + adam) T / N;  4.127 bits = 4 (NF4 code) + 8/64 (uint8 absmax per 64 weights)
           + 32/(64 x 256) (fp32 scale per 256 absmax)

Activations: bytes autograd keeps for backward, per layer per token (bf16 autocast: matmul outputs 2 bytes;
the residual stream and RMSNorm values are fp32 when the weights are, as on CPU):

    bf16 weights  block = (4h + 2q + 2kv + 4I) x 2
                  attention: norm input, normed x, q and k after RoPE, v, SDPA out (o_proj's input);
                  MLP: norm input, normed x, gate, up, silu(gate), silu(gate) * up (down_proj's input)
      lora        + (sum(in) + 7r) x 2 + sum(in)   A's bf16 input, A x, the 1-byte dropout masks (dropout > 0)
                  (the earlier formula: not measured on this project's machines, which have no GPU)
    fp32 weights, bf16 autocast (CPU with AVX-512-BF16, or train.precision: bf16):
      full        block = 4h x 4 + (5h + 2q + 2kv + 4I) x 2
                  norm inputs and normed x in fp32 (the norm weights train); every Linear keeps its own
                  bf16 cast of its input (q, k, v: 3h; gate, up: 2h; o, down), SDPA keeps bf16 q, k, v
                  and its output (which is o_proj's input)
      lora/qlora  block = 2h x 4 + (5h + 3q + 2kv + 4I + 7r) x 2 (+ sum(in) x 4 dropout masks)
                  the frozen norms keep only their fp32 input; the frozen base Linear keeps none of its
                  input, lora_A keeps its own bf16 cast of it (peft casts the input to the adapter's fp32
                  first, so even o_proj's already-bf16 input gets a copy: + q), lora_B keeps A x;
                  CPU dropout keeps its mask in x's dtype (fp32: 4 bytes; CUDA's fused dropout: 1 byte)
    fp32 weights, plain fp32:
      full        block = (4h + 2q + 2kv + 4I) x 4
      lora/qlora  + 7r x 4                          A x; lora_A shares its input with the base layer
                  block = 2h x 4 + (2q + 2kv + 3I + 7r) x 4 + sum(in) x (4 + 4)   with dropout: each lora_A
                  keeps the dropped copy of its input and dropout its mask; no one keeps the normed x
                  (frozen norms) nor the MLP product (the frozen down_proj keeps no input)
    lowest block  lora/qlora with fp32 weights, no checkpointing: the lowest adapted block's input needs no
                  gradient (frozen embeddings, no graph below), so its input norm keeps nothing and its
                  q, k, v no dropout masks: - h x 4 (- 3h x mask with dropout)
    no checkpointing:   B S (L' block - lowest)
    checkpointing:      B S (L' h x 4 + block)  each block's (fp32) input, plus one block recomputed in backward
                        L' = blocks in backward: L for full fine-tuning, the adapted last N for lora/qlora
                        (`method.layers`: the blocks below them record no graph and keep nothing)
    loss:               B S f h x 4 (+ V h x 4 full)   tunelab's loss (ops/linear_ce.py) runs head +
                                           cross-entropy in chunks of 1,024 positions and forms their
                                           gradient in the forward: it keeps dL/dh (and the head's dL/dW)
    logits (transient): c x V x 4 with c = ceil(P / ceil(P / 1,024)): one chunk's fp32 logits (softmax -
                        onehot in place; P = B S f positions in equal chunks of <= 1,024)
                        (autocast: c V x (2 + 4): the bf16 matmul output beside its fp32 upcast, then the
                        fp32 softmax - onehot beside its bf16 cast for dL/dh = dz W)
                        f = share of positions with a target (tunelab runs the head on those only)

e.g. SmolLM2-135M (fp32 weights, autocast), per layer per token: full 4 x 576 x 4 + (5 x 576 + 2 x 576
     + 2 x 192 + 4 x 1,536) x 2 = 9,216 + 21,120 = 30,336 bytes (x 30 layers = 0.91 MB per token);
     lora 2 x 576 x 4 + (5 x 576 + 3 x 576 + 2 x 192 + 4 x 1,536 + 7 x 16) x 2 = 4,608 + 22,496 = 27,104.

Weight copies kept for backward (the `workspace` field), under bf16 autocast with fp32 weights: each
Linear casts its weight to bf16 and autograd keeps that copy to compute the input's gradient. A frozen
fp32 weight (lora's base) is cast anew at each use; a trainable fp32 leaf (full's weights, the adapters)
is cast once per forward by autocast's weight cache and that cached copy is the one kept. QLoRA's base
keeps none: its 4-bit layers decode the weight again in backward (tunelab's `QuantLinear`, as
bitsandbytes' 4-bit matmul does) instead of keeping the decoded copy (the decode itself is one layer's
weight at a time: <= 1.8 MB on SmolLM2, left out). The lowest adapted block's q, k, v record no graph
(input and weight without gradient) and keep none. The head keeps none (the fused loss uses its cast
inside the forward). No copies with bf16 weights or in plain fp32:

    full         L sum(in x out) x 2                                      without checkpointing
    lora         L' (sum(in x out) + r sum(in + out)) x 2 - h (q + 2kv) x 2  (base + adapter copies)
    qlora        T x 2 = L' r sum(in + out) x 2                           (the adapters' copies)
    checkpointing: one block's worth (one block is recomputed and cast at a time in backward)

e.g. SmolLM2-135M, full fine-tuning under autocast: 106.2M x 2 = 212 MB; lora on 8 blocks:
8 x (3,538,944 + 162,816) x 2 - 576 x 960 x 2 = 58.1 MB.

What the loss holds beyond its logits under bf16 autocast with fp32 weights (`head_cast`, `cast_cache`):

    head cast    V h x 2: both of the loss's matmuls cast the fp32 head: z = h_c W^T casts W^T (a view,
                 which autocast's cache skips) and frees it when the matmul returns, dz W casts W (a new
                 cast per chunk when the head is frozen; autocast's cached one when it trains, alive until
                 the forward ends). Full fine-tuning with >= 2 chunks: from the second chunk on W^T's cast
                 and the cached W's coexist with the bf16 logits: + max(0, V (2h - 4c)) (2 V h x 2 + c V x 2
                 against c V x 6 + V h x 2). SmolLM2: 49,152 x 576 x 2 = 56.6 MB.
    cast cache   with checkpointing: autocast's cache keeps the forward's bf16 copy of every trainable fp32
                 weight until the forward ends, although checkpointing keeps none of them for backward:
                 full L sum(in x out) x 2 (212 MB on SmolLM2), lora/qlora T x 2. Without checkpointing
                 these are the copies autograd keeps (in `workspace`).

Checked against what autograd actually saves (tests/memory/test_memory.py, saved-tensor hooks) and against
the live-tensor peak of training steps (docs/memory.md).

The peak is also checked against the live-tensor peak of real training steps on the embedded model
(tests/memory/test_memory_real_slow.py, benchmarks/memory_peak.py). Small tensors are left out (RMSNorm's
rstd, RoPE tables, attention log-sum-exp), as is what a process holds beyond its tensors (the Python
process, CUDA context ~0.3-0.5 GB, the allocator's free lists): see docs/memory.md.
"""

from __future__ import annotations

from tunelab.errors import TunelabError
from tunelab.memory.available import detect_memory
from tunelab.memory.base_layout import EMBED_QUANT, base_bits_of, int8_head_loss, int8_head_rows, int8_rows_bytes
from tunelab.methods import METHODS as REGISTRY
from tunelab.methods import method_of
from tunelab.methods.qlora import QLORA_BITS  # noqa: F401  (its value: methods/qlora.py)
from tunelab.memory.result import MemoryEstimate, fmt_bytes
from tunelab.memory.shape import ModelShape, read_config
from tunelab.ops.chunking import LOSS_CHUNK, loss_chunk_rows

ADAM_BYTES = {"adamw": 8.0, "adamw8bit": 2 + 8 / 256}  # m and v per trainable param (8-bit: + fp32 absmax per 256)
# the methods with terms of their own (freeze, qat and bitnet are estimated as full: `MemoryTerms.label`)
METHODS = tuple(sorted(name for name, m in REGISTRY.items() if m.memory.label == name))
GB = 1024**3
# what a CPU training process holds beside its tensors: the interpreter with torch, transformers, peft and
# tunelab imported (VmRSS before the load in benchmarks/big_model.py: 0.43 GB, torch 2.13 CPU, Linux)
PROCESS_BYTES = 430 * 10**6


def estimate(model: str | dict, method: str = "lora", batch: int = 1, seq: int = 512, grad_checkpointing: bool = False,
             r: int = 16, optimizer: str = "adamw", device: str = "auto", weights_dtype: str = "auto",
             lora_dropout: float = 0.0, target_fraction: float = 1.0, autocast: bool = True,
             detect: bool = True, layers: int | str = "all", grad_accum: int = 1, embed_quant: str = "none",
             base: str | dict | None = "auto") -> MemoryEstimate:
    """Estimate the training memory of `model` (alias, folder, config.json path, or a config dict).

    Args:
        method: full | lora | qlora (LoRA on all 7 projections of every block, rank `r`).
        optimizer: adamw (fp32 m, v: 8 bytes/trainable param) | adamw8bit (2 + 8/256).
        device: auto | cpu | cuda: where it trains, for the weight dtype and the memory compared with.
        weights_dtype: auto (fp32 on CPU, bf16 on CUDA: tunelab's defaults) | fp32 | bf16.
        target_fraction: share of positions that carry a target (the head runs on those only).
        autocast: bf16 autocast (`train.precision: auto` on CUDA and AVX-512-BF16 CPUs, or bf16): matmul
            outputs in 2 bytes, and with fp32 weights the bf16 weight copies and casts it makes (see the
            module docstring); False: plain fp32 (4 bytes, no copies), as `auto` on other CPUs.
        detect: look up the device's memory (False: no lookup, `fits` is None).
        layers: lora/qlora adapt the last `layers` blocks ("all": every block). Blocks below record no
            autograd graph, so only the adapted blocks keep activations and weight copies.
        grad_accum: micro-batches per optimizer step; above 1, gradients live through later forwards.
        embed_quant: qlora: none (embeddings and head in wb) | int8 (frozen int8 rows + an fp32 scale each,
            `quant.int8_rows`: V h + 4 V bytes a matrix; the head's logits then go through plain
            cross-entropy, see `memory.base_layout`).
        base: qlora's stored block Linears: auto (a GGUF that qlora keeps as blocks when `model` is one, else
            NF4 + double quant) | nf4 | a GGML type ("Q4_K") | a .gguf file | {ggml type: weights}, priced at
            the block types' bits (`memory.base_layout`).
    """
    if method not in METHODS:
        raise TunelabError(f"unknown method '{method}'", where="--method", hint=f"one of: {', '.join(METHODS)}")
    if optimizer not in ADAM_BYTES:
        raise TunelabError(f"unknown optimizer '{optimizer}'", where="--optimizer", hint="adamw or adamw8bit")
    if embed_quant not in EMBED_QUANT:
        raise TunelabError(f"unknown embed_quant '{embed_quant}'", where="--embed-quant", hint="none or int8")
    if batch < 1 or seq < 1 or r < 1:
        raise TunelabError("batch, seq and r must be >= 1", where="memory")
    cfg, name = (model, model.get("_name_or_path", "config")) if isinstance(model, dict) else read_config(model)
    name = model if isinstance(model, str) else name
    s = ModelShape.from_config(cfg)
    dev, total_mem, avail = detect_memory(device) if detect else (device, None, None)
    dev = "cpu" if dev == "auto" else dev
    wb = {"auto": 2 if dev == "cuda" else 4, "fp32": 4, "bf16": 2}[weights_dtype]
    adam = ADAM_BYTES[optimizer]
    n, lin, h = s.params, s.linear_params, s.hidden
    # the method's terms (methods/base.py, MemoryTerms): full trains every weight; lora and qlora train
    # adapters on a frozen base, which qlora stores in 4 bits and decodes again in backward
    terms = method_of(method).memory
    full, quant_bits, redecode = terms.trains_all, terms.base_bits, terms.base_recomputed
    copies_base = not full and not redecode  # lora: the frozen base's bf16 casts are kept for backward
    # blocks that take part in backward: all for full fine-tuning, the adapted ones for lora/qlora
    nb = s.layers if full or layers == "all" else min(int(layers), s.layers)
    t = n if full else s.lora_params(r, nb)
    rows: list[tuple[str, int, str]] = []
    w_name = "fp32" if wb == 4 else "bf16"

    if full:
        weights, grads = n * wb, n * wb
        master = n * 4 if wb < 4 else 0  # mixed precision keeps an fp32 copy for the update
        opt = int(n * adam)
        adapters = 0
        rows += [("weights", weights, f"{fmt_bytes(n)} params x {wb} ({w_name})"),
                 ("gradients", grads, f"{fmt_bytes(n)} x {wb} ({w_name})"),
                 ("optimizer states", opt, f"{fmt_bytes(n)} x {adam:g} ({optimizer} m, v)")]
        if master:
            rows.append(("fp32 master weights", master, f"{fmt_bytes(n)} x 4"))
        bpp = f"{wb} weights + {wb} grads + {adam:g} {optimizer} m,v" + (" + 4 fp32 master" if master else "")
    else:
        if quant_bits is None:
            weights = n * wb
            rows.append(("weights (frozen)", weights, f"{fmt_bytes(n)} params x {wb} ({w_name})"))
            bpp = f"{wb} frozen weights"
        else:
            mix = base_bits_of(base, quant_bits, model)
            quant_bits, fmt_name = mix.bits, mix.label
            quant = int(lin * quant_bits / 8)
            rows_int8 = embed_quant == "int8"
            emb = s.vocab * h * (1 if s.tied else 2)  # embeddings (+ the untied head)
            emb_bytes = int8_rows_bytes(s) if rows_int8 else emb * wb
            weights = quant + (n - lin - emb) * wb + emb_bytes
            short = "NF4" if fmt_name == "NF4+DQ" else fmt_name
            if rows_int8:
                rows.append(("weights (frozen)", weights,
                             f"{fmt_bytes(lin)} block-Linear x {quant_bits:.3f}/8 ({fmt_name}) + {fmt_bytes(emb)} "
                             f"embeddings{'' if s.tied else ' + head'} x (1 + 4/h) (int8 rows) "
                             f"+ {fmt_bytes(n - lin - emb)} other x {wb} ({w_name})"))
                bpp = (f"{quant_bits / 8:.3f} x {lin / n:.1%} {short} + int8 rows x {emb / n:.1%} "
                       f"+ {wb} x {(n - lin - emb) / n:.1%} {w_name}")
            else:
                rows.append(("weights (frozen)", weights, f"{fmt_bytes(lin)} block-Linear x {quant_bits:.3f}/8 "
                             f"({fmt_name}) + {fmt_bytes(n - lin)} other x {wb} ({w_name})"))
                bpp = f"{quant_bits / 8:.3f} x {lin / n:.1%} {short} + {wb} x {n - lin and (n - lin) / n:.1%} {w_name}"
        adapters = 4 * t
        grads, opt, master = 4 * t, int(t * adam), 0
        rows += [("adapters (fp32)", adapters, f"T = {fmt_bytes(t)} = L' r sum(in+out) = {nb} x {r} x "
                                               f"{sum(a + b for _, a, b in s.linears()):,}; x 4"),
                 ("gradients", grads, f"T x 4 (fp32)"),
                 ("optimizer states", opt, f"T x {adam:g} ({optimizer} m, v)")]
        bpp += f" + (4 + 4 + {adam:g}) x T/N ({t / n:.2%})"

    # ---- activations (bytes kept per layer per token) -----------------------------------------------------------
    q, kv, i = s.q_dim, s.kv_dim, s.intermediate
    act = 2 if autocast else 4  # bytes of a matmul output
    res = 4 if (wb == 4 or not autocast) else 2  # bytes of the residual stream and the RMSNorm values
    cast32 = autocast and wb == 4  # autocast casts the fp32 weights and activations to bf16 for every matmul
    sum_in = sum(a for _, a, _ in s.linears())
    drop = lora_dropout > 0 and not full
    # dropout keeps its mask: CUDA's fused dropout a 1-byte bool, CPU's the noise tensor in x's dtype
    mask = 1 if dev == "cuda" else res
    if cast32 and full:  # fp32 weights: each Linear keeps its own bf16 cast of its input
        block = 4 * h * res + act * (5 * h + 2 * q + 2 * kv + 4 * i)
        block_how = "4h x 4 + (5h + 2q + 2kv + 4I) x 2"
    elif cast32:
        # lora/qlora under autocast with fp32 weights: the frozen norms keep their fp32 input only (2h x 4);
        # the frozen base Linear keeps no input, lora_A keeps its own bf16 cast of it (peft, and for qlora
        # adapters/qlora.py, cast the input to the adapter's fp32 first, so o_proj's adapter copies SDPA's
        # already-bf16 output too: + q), lora_B its A x
        block = 2 * h * res + act * (5 * h + 3 * q + 2 * kv + 4 * i + 7 * r) + (sum_in * mask if drop else 0)
        block_how = "2h x 4 + (5h + 3q + 2kv + 4I + 7r) x 2" + (f" + sum(in) x {mask} (dropout masks)" if drop else "")
    elif not full and wb == 4 and drop:
        # lora/qlora in plain fp32 with dropout: each adapted Linear's lora_A keeps the dropped copy of its
        # input and dropout its mask, sum(in) x (4 + mask); nothing else keeps the normed x (the norms
        # are frozen: 2h x 4 of their inputs) nor the MLP product (the frozen down_proj keeps no input)
        block = 2 * h * 4 + 4 * (2 * q + 2 * kv + 3 * i + 7 * r) + sum_in * (4 + mask)
        block_how = f"2h x 4 + (2q + 2kv + 3I + 7r) x 4 + sum(in) x (4 + {mask})"
    else:
        block = act * (4 * h + 2 * q + 2 * kv + 4 * i)
        block_how = f"(4h + 2q + 2kv + 4I) x {act}"
        if not full:
            # lora_A shares the base layer's input (no dropout: tunelab's fused LoRA Linear keeps it once);
            # bf16 weights (CUDA) with dropout: A's own input and 1-byte masks (the earlier formula, not
            # measured on this project's machines)
            block += act * (sum_in * drop + 7 * r) + (sum_in if drop else 0)  # A's input, A x, masks
            block_how += (f" + (sum(in) + 7r) x {act}" if drop else f" + 7r x {act}") \
                + (" + sum(in) masks" if drop else "")
    # lora/qlora, fp32 weights, no checkpointing: the lowest adapted block's input needs no gradient (the
    # embeddings are frozen, the blocks below record no graph), so its input RMSNorm keeps nothing (- h x 4)
    # and its q, k, v keep no dropout masks (- 3h x mask); with checkpointing a full block is recomputed
    lowest = h * res + (3 * h * mask if drop else 0) if not full and wb == 4 and not grad_checkpointing else 0
    tokens = batch * seq
    kept = tokens * (nb * h * res + block) if grad_checkpointing else tokens * (nb * block - lowest)
    # tunelab's loss (ops/linear_ce.py) runs the head and the cross-entropy LOSS_CHUNK positions at a
    # time and forms their gradient in the forward: nothing of size P x V is kept for backward, one
    # chunk's logits (fp32; under autocast also a bf16 one: the matmul's output, then the cast of
    # softmax - onehot for dL/dh) are alive while it runs.
    # What it keeps instead is the gradient it formed: dL/dh for the target positions, and for full
    # fine-tuning dL/dW of the head (fp32, V x h), from the loss until backward.
    positions = int(tokens * target_fraction)
    live = loss_chunk_rows(positions)
    loss_grad = positions * h * res + (s.vocab * h * 4 if full else 0)
    transient = live * s.vocab * (act + 4 if autocast else 4)
    # Under autocast an fp32 head is cast to bf16 by both of the loss's matmuls: z = h_c W^T casts W^T (a
    # view, which autocast's cache skips) and frees it when the matmul returns; dz W casts W, a new cast per
    # chunk when the head is frozen (lora/qlora), autocast's cached one when W is a trainable leaf (full),
    # alive until the forward ends. So V h x 2 at the peak of a chunk (c V x 6 + V h x 2), and for full
    # fine-tuning from the second chunk on W^T's cast beside the cached W's: 2 V h x 2 + c V x 2.
    head_cast = 0
    if cast32 and positions:
        head_cast = s.vocab * h * 2
        if full and -(-positions // LOSS_CHUNK) > 1:
            head_cast += max(0, s.vocab * h * 2 - live * s.vocab * 4)
    int8_head = embed_quant == "int8" and quant_bits is not None
    if int8_head:  # plain cross-entropy on the int8 head's chunked product (`memory.base_layout.int8_head_loss`)
        loss_grad, transient, head_cast = int8_head_loss(s, positions, act)
    activations = kept + loss_grad
    how = (f"B S (L' h x {res} + block) = {tokens:,} x ({nb} x {h} x {res} + {block:,})" if grad_checkpointing
           else f"B S L' block = {tokens:,} x {nb} x {block:,}" + (f" - B S x {lowest:,} (lowest block)" if lowest else ""))
    rows.append(("activations", kept, f"{how} bytes (block below; L' = blocks in backward)"))
    if int8_head:
        rows += int8_head_rows(loss_grad, transient, act, target_fraction)
    else:
        rows.append(("loss gradient (kept)", loss_grad, f"B S x {target_fraction:g} x h x {res} (dL/dh)"
                     + (" + V h x 4 (the head's dL/dW)" if full else "")))
        rows.append(("logits (transient)", transient,
                     f"ceil(P / ceil(P / {LOSS_CHUNK})) x V x "
                     + ("(2 + 4): bf16 and fp32 logits" if autocast else "4")
                     + f" (one chunk of the loss; P = B S x {target_fraction:g})"))
    if head_cast:
        rows.append(("head weight cast (transient)", head_cast,
                     "V h x 2 (bf16 cast of the fp32 head in the loss's matmuls)"
                     + (" + V (2h - 4c): W^T's cast beside the cached W's" if head_cast > s.vocab * h * 2 else "")))
    # bf16 copies of the weights that backward needs (autocast casts of fp32 weights). The frozen base Linears
    # of lora are cast anew each forward and autograd keeps the copy for the input's gradient; trainable fp32
    # leaves (full's weights, the adapters) are cast once per forward by autocast's cache, which autograd
    # keeps too. QLoRA's 4-bit layers decode again in backward and keep none; the head keeps none (the fused
    # loss uses its cast inside the forward). The lowest adapted block's q, k, v (input without gradient)
    # record no graph and keep none.
    block_lin = sum(a * b for _, a, b in s.linears())
    base = 0 if redecode else block_lin  # per block
    adapt = 0 if full else r * sum(a + b for _, a, b in s.linears())  # T / L', per block
    workspace = cast_cache = 0
    if cast32:
        if grad_checkpointing:  # one block is recomputed (and cast) at a time in backward ...
            workspace = 2 * (base + adapt)
            # ... but the forward's casts of the trainable weights stay in autocast's cache until the
            # forward (and so the loss) ends: full L sum(in x out) x 2, lora/qlora T x 2
            cast_cache = 2 * (s.layers * block_lin if full else t)
        else:
            workspace = 2 * (nb * (base + adapt) - (h * q + 2 * h * kv if copies_base else 0))
    if workspace:
        what = "one block's" if grad_checkpointing else f"{nb} blocks'"
        parts = ([f"Linears {fmt_bytes(base * (1 if grad_checkpointing else nb))}"] if base else []) \
            + ([f"adapters {fmt_bytes(adapt * (1 if grad_checkpointing else nb))}"] if adapt else [])
        rows.append(("weight copies for backward", workspace, f"({what} {' + '.join(parts)}) x 2 (bf16)"
                     + (" - the lowest block's q, k, v" if copies_base and not grad_checkpointing else "")))
    if cast_cache:
        rows.append(("autocast cast cache (transient)", cast_cache,
                     ("L sum(in x out)" if full else "T") + " x 2: bf16 copies of the trainable weights, "
                     "cached by autocast until the forward ends"))

    # AdamW's step on CPU walks the parameters one at a time (torch uses foreach kernels on CUDA only):
    # exp_avg_sq.sqrt() / bias_correction2_sqrt makes two temporaries the size of the largest trainable
    # tensor (full: the embedding matrix, V h). On CUDA the foreach step makes them for all at once.
    largest = max(s.vocab * h, *(a * b for _, a, b in s.linears())) if full \
        else max(r * max(a, b) for _, a, b in s.linears())
    step_temp = int(2 * largest * 4) if dev == "cpu" else int(t * 4 * 2)
    # qlora: each 4-bit layer decodes its weight when it runs (forward, recompute, backward), one at a time:
    # the int32 copy of the codes (n/2 x 4) and the gathered code values (n x act), multiplied by the block
    # constants in place (`codecs.dequantize_packed`), for the largest block Linear (n = in x out)
    decode = 0
    if redecode:
        big = max(a * b for _, a, b in s.linears())
        decode = 2 * big + act * big
        how = f"largest block Linear {fmt_bytes(big)} x (2 + {act}): codes as int32, code values (x absmax in place)"
        rows.append(("4-bit decode (transient)", decode, how))
    rows.append(("optimizer step temporaries", step_temp,
                 ("2 x largest trainable tensor" if dev == "cpu" else "2 x T") + " x 4 (AdamW's sqrt(v), denominator)"))
    est = MemoryEstimate(name, method, batch, seq, grad_checkpointing, r, optimizer, dev, wb, n, t,
                         weights, grads, opt, master, adapters, activations, workspace, transient, rows,
                         available=avail, device_total=total_mem, step_temporaries=step_temp,
                         recompute=tokens * block if grad_checkpointing else 0,
                         grad_accum=max(1, grad_accum), head_cast=head_cast, cast_cache=cast_cache, decode=decode,
                         process=PROCESS_BYTES if dev == "cpu" else 0)
    est.bytes_per_param_text = f"{bpp} = {est.bytes_per_param:.2f} bytes/param"
    est.block_text = f"block = {block_how} = {block:,} bytes per layer per token"
    return est
