"""Quantized layers: `QuantLinear` (packed weights, dequantized on the fly), `FakeQuant` and
`BitLinear` (straight-through estimators for QAT / BitNet).

    QuantLinear:  y = x W'^T + b,   W' = dequantize(packed, constants)   (recomputed every forward)
    STE:          forward uses Q(w); backward treats Q as the identity: dQ(w)/dw := 1,
                  written w + (Q(w) - w).detach()

A QuantLinear's packed weight is a buffer (no gradient); gradients flow to the input x (and so to
LoRA adapters wrapped around it). There is no cached inference layout: every forward, in train or
eval mode, with or without grad, runs the same decode + `F.linear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.quant import codecs, integer
from tunelab.quant.codecs import FORMATS_4BIT, Packed4bit

FORMATS = FORMATS_4BIT + ("int8", "ternary")  # what QuantLinear stores


def _compute_dtype(x: torch.Tensor, fixed: torch.dtype | None) -> torch.dtype:
    """The matmul dtype: autocast's if active for x's device, else `fixed`, else x's."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return fixed or x.dtype


class QuantLinear(nn.Module):
    """A Linear layer whose weight is stored packed: nf4 | fp4 | int4 (4-bit, blockwise absmax),
    int8 (symmetric, one absmax per output row: s = absmax / 127) or ternary (2-bit, W' = gamma q).

    forward(x) = F.linear(x, W'.to(dtype), bias), W' the dequantized weight [out, in], dtype the
    autocast dtype when autocast is on, else `compute_dtype` (x cast to it and the output cast back),
    else x.dtype. The decode runs in that dtype: one 256-entry table gather per byte (two weights)
    and one multiply by the block constant; in bf16, code, absmax and their product are each rounded
    to bf16 (unit roundoff 2**-8), so the relative difference to the fp32 decode is <= 3 * 2**-8 (1.2%).

    Buffers (saved in state_dict), 4-bit: `packed` uint8 [ceil(out*in/2)]; `absmax` fp32 [blocks],
    or uint8 [blocks] plus `absmax_scale` fp32 [ceil(blocks/256)] and `absmax_offset` fp32 [] with
    double quantization. Bytes are identical to bitsandbytes' `quantize_4bit` for nf4/fp4.
    int8: `packed` int8 [out, in], `absmax` fp32 [out]. ternary: `packed` uint8 [ceil(out*in/4)],
    `absmax` fp32 [] (= gamma). blocksize and double_quant apply to the 4-bit formats only.

    Args:
        in_features, out_features: the Linear's shape.
        bias: whether there is a (frozen) bias.
        fmt: "nf4" (default), "fp4", "int4", "int8" or "ternary".
        blocksize: weights per absmax constant (64).
        double_quant: quantize the absmax constants too (8-bit, blocks of 256): 4.5 -> 4.127 bits/param.
        compute_dtype: matmul dtype outside autocast (None = the input's dtype).
        act_quant: also round the input to 8 bits per token (W1.58A8 BitNet inference, see BitLinear).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, fmt: str = "nf4",
                 blocksize: int = 64, double_quant: bool = True, compute_dtype: torch.dtype | None = None,
                 act_quant: bool = False):
        super().__init__()
        self.act_quant = act_quant
        if fmt not in FORMATS:
            raise ValueError(f"QuantLinear: unknown format {fmt!r}; one of {FORMATS}")
        double_quant = double_quant and fmt in FORMATS_4BIT
        self.in_features, self.out_features = in_features, out_features
        self.fmt, self.blocksize, self.double_quant = fmt, blocksize, double_quant
        self.compute_dtype = compute_dtype
        n = in_features * out_features
        nblocks = -(-n // blocksize)  # ceil
        if fmt == "int8":
            self.register_buffer("packed", torch.zeros(out_features, in_features, dtype=torch.int8))
            self.register_buffer("absmax", torch.zeros(out_features))
        elif fmt == "ternary":
            self.register_buffer("packed", torch.zeros(-(-n // 4), dtype=torch.uint8))
            self.register_buffer("absmax", torch.zeros(()))
        else:
            self.register_buffer("packed", torch.zeros((n + 1) // 2, dtype=torch.uint8))
            if double_quant:
                self.register_buffer("absmax", torch.zeros(nblocks, dtype=torch.uint8))
                self.register_buffer("absmax_scale", torch.zeros(-(-nblocks // codecs.DQ_BLOCKSIZE)))
                self.register_buffer("absmax_offset", torch.zeros(()))
            else:
                self.register_buffer("absmax", torch.zeros(nblocks))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str = "nf4", blocksize: int = 64, double_quant: bool = True,
                    compute_dtype: torch.dtype | None = None) -> "QuantLinear":
        """Quantize `linear.weight` (any float dtype) into a new QuantLinear on the same device."""
        return cls.from_weight(linear.weight, linear.bias, fmt, blocksize, double_quant, compute_dtype)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, fmt: str = "nf4",
                    blocksize: int = 64, double_quant: bool = True, compute_dtype: torch.dtype | None = None,
                    clip: torch.Tensor | None = None, act_quant: bool = False) -> "QuantLinear":
        """Like `from_linear` from a [out, in] weight; `clip` (int8 only, [out]) replaces the per-row
        absmax, e.g. from `calibrate.mse_clip(w, per_channel=True)`."""
        w = weight.detach()
        out_f, in_f = w.shape
        q = cls(in_f, out_f, bias is not None, fmt, blocksize, double_quant, compute_dtype, act_quant)
        if fmt == "int8":
            iq = integer.quantize_symmetric(w, 8, "channel", absmax=clip)
            q.packed, q.absmax = iq.q.clone(), iq.scale * 127  # store absmax; scale = absmax / 127
        elif fmt == "ternary":
            t = integer.quantize_ternary(w)
            q.packed, q.absmax = t.packed, t.gamma.reshape(())
        else:
            q.load_packed(codecs.quantize_4bit(w, fmt, blocksize, q.double_quant))
        if bias is not None:
            q.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        return q.to(w.device)

    def load_packed(self, p: Packed4bit) -> None:
        """Copy a `Packed4bit` of shape [out, in] into the buffers."""
        if tuple(p.shape) != (self.out_features, self.in_features) or p.fmt != self.fmt:
            raise ValueError(f"packed tensor {p.fmt} {tuple(p.shape)} does not fit "
                             f"{self.fmt} ({self.out_features}, {self.in_features})")
        if p.double_quant != self.double_quant or p.blocksize != self.blocksize:
            raise ValueError("packed tensor blocksize/double_quant differ from the layer's")
        self.packed = p.packed.clone()
        self.absmax = p.absmax.clone()
        if p.double_quant:
            self.absmax_scale = p.absmax_scale.clone()
            self.absmax_offset = p.absmax_offset.clone().reshape(())

    def to_packed(self) -> Packed4bit:
        """The stored weight as a `Packed4bit` (views of the buffers)."""
        return Packed4bit(self.packed, self.absmax, (self.out_features, self.in_features), self.fmt,
                          self.blocksize, getattr(self, "absmax_scale", None), getattr(self, "absmax_offset", None))

    def nbytes(self) -> int:
        """Bytes of the stored weight: packed codes + constants (bias excluded)."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def block_absmax(self) -> torch.Tensor:
        """fp32 absmax per block (decoded from 8 bits with double quantization)."""
        if not self.double_quant:
            return self.absmax
        return codecs.dequantize_blockwise_8bit(self.absmax, self.absmax_scale) + self.absmax_offset

    def _decode(self, dtype: torch.dtype) -> torch.Tensor:
        if self.fmt == "int8":  # q * absmax / 127 per row
            return self.packed.to(dtype) * (self.absmax / 127).to(dtype)[:, None]
        if self.fmt == "ternary":  # q * gamma
            w = integer.decode_ternary(self.packed, self.absmax, self.in_features * self.out_features, dtype)
            return w.view(self.out_features, self.in_features)
        work = dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32  # the decode's dtype
        table = codecs.pair_table(self.fmt, work, self.packed.device)
        n = self.in_features * self.out_features
        w = codecs.dequantize_packed(self.packed, self.block_absmax(), table, n, self.blocksize, work)
        return w.view(self.out_features, self.in_features).to(dtype)

    @property
    def qweight(self) -> torch.Tensor:
        """The packed codes; peft looks for `qweight` to place adapters on the base layer's device."""
        return self.packed

    @torch.no_grad()
    def dequantize_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W' [out, in]: code[q] * absmax computed in fp32 (as bitsandbytes), then cast to dtype."""
        return self._decode(torch.float32).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_quant:
            x = fake_quantize_activations(x)
        dtype = _compute_dtype(x, self.compute_dtype)
        if x.requires_grad and torch.is_grad_enabled() and (self.bias is None or not self.bias.requires_grad):
            # input gradient needed (adapters below): decode W' again in backward instead of keeping it
            return _DecodeAgainLinear.apply(x, self, dtype)
        return _linear_in(x, self._decode(dtype), self.bias, dtype)  # no grad: buffers only

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"fmt={self.fmt}, blocksize={self.blocksize}, double_quant={self.double_quant}, act_quant={self.act_quant}")


def _linear_in(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """F.linear(x, w, bias) computed in `dtype` (w's): under autocast as autocast casts (output in
    its dtype), else x and bias cast to dtype and the output back to x's dtype."""
    if torch.is_autocast_enabled(x.device.type) or dtype == x.dtype:
        return F.linear(x, w, bias)
    bias = None if bias is None else bias.to(dtype)
    return F.linear(x.to(dtype), w, bias).to(x.dtype)


class _DecodeAgainLinear(torch.autograd.Function):
    """y = x W'^T + b with W' = layer's dequantized weight in `dtype`; dx = dy W'.

    F.linear would keep the decoded W' (4 bytes a weight in fp32, 8x the 4-bit codes) alive from the
    forward to the backward for every layer an input gradient passes through. Here backward decodes
    it again from the codes (one decode per layer, a small fraction of its matmul), so only x's
    graph is kept: the decoded weights of the adapted blocks are not held while their graph is
    alive (measured: docs/memory.md, docs/performance.md). The base weight and bias are frozen (no
    gradient for them).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: "QuantLinear", dtype: torch.dtype) -> torch.Tensor:
        ctx.layer, ctx.dtype, ctx.x_dtype = layer, dtype, x.dtype
        return _linear_in(x, layer._decode(dtype), layer.bias, dtype)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        w = ctx.layer._decode(ctx.dtype)
        return (dy.to(ctx.dtype) @ w).to(ctx.x_dtype), None, None


# --- fake quantization (QAT) ------------------------------------------------------------------

@torch.no_grad()
def fake_quantize_weight(w: torch.Tensor, fmt: str, blocksize: int = 64) -> torch.Tensor:
    """Q(w) = dequantize(quantize(w)) in w's dtype, as QuantLinear would store it (int8 per row,
    4-bit blockwise, ternary absmean)."""
    if fmt == "int8":
        return integer.dequantize_int(integer.quantize_symmetric(w, 8, "channel"), w.dtype)
    if fmt == "ternary":
        gamma = integer.ternary_scale(w)
        return (integer.ternarize(w, gamma).float() * gamma).to(w.dtype)
    if fmt in FORMATS_4BIT:
        return codecs.dequantize_4bit(codecs.quantize_4bit(w, fmt, blocksize), w.dtype)
    raise ValueError(f"unknown format {fmt!r}; one of {FORMATS}")


def fake_quantize_activations(x: torch.Tensor) -> torch.Tensor:
    """Per-token 8-bit absmax round trip with a straight-through gradient: x + (Q(x) - x).detach()."""
    q, scale = integer.quantize_activations_8bit(x)
    return x + (integer.dequantize_activations_8bit(q, scale, x.dtype) - x).detach()


class FakeQuant(nn.Module):
    """Straight-through fake quantizer: forward w + lam * (Q(w) - w).detach(), so the value is Q(w)
    at lam = 1 and the gradient passes unchanged (dQ/dw := 1). `lam` in [0, 1] allows a warm-up
    from full precision (lam = 0) to fully quantized (lam = 1)."""

    def __init__(self, fmt: str = "int8", blocksize: int = 64, lam: float = 1.0):
        super().__init__()
        if fmt not in FORMATS:
            raise ValueError(f"FakeQuant: unknown format {fmt!r}; one of {FORMATS}")
        self.fmt, self.blocksize, self.lam = fmt, blocksize, lam

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + self.lam * (fake_quantize_weight(w, self.fmt, self.blocksize) - w).detach()

    def extra_repr(self) -> str:
        return f"fmt={self.fmt}, blocksize={self.blocksize}, lam={self.lam}"


class FakeQuantLinear(nn.Module):
    """QAT Linear: y = x FakeQuant(W)^T + b with a trainable full-precision W (the latent weight).
    `QuantLinear.from_weight(W, b, fmt)` afterwards stores exactly the forward's Q(W)."""

    def __init__(self, linear: nn.Linear, fmt: str = "int8", blocksize: int = 64):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.fq = FakeQuant(fmt, blocksize)

    @property
    def fmt(self) -> str:
        return self.fq.fmt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.fq(self.weight), self.bias)


class BitLinear(nn.Module):
    """BitNet b1.58 Linear: ternary weights (absmean) and 8-bit per-token activations, both with a
    straight-through estimator; the latent weight W stays full precision and trainable.

        gamma = mean|W|,  W_q = gamma * clamp(round(W / gamma), -1, 1)
        s_t = max|x_t| / 127,  x_q = s_t * round(x_t / s_t)
        y = x_q W_q^T + b   (forward);  gradients as if x_q = x, W_q = W (backward)

    `lam` warms the quantization in (y uses x + lam (x_q - x), W + lam (W_q - W)). No norm inside: in
    Llama-style models every Linear input already follows an RMSNorm or an activation.
    """

    def __init__(self, linear: nn.Linear, lam: float = 1.0):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.lam = lam
        self.fmt = "ternary"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = x + self.lam * (fake_quantize_activations(x) - x).detach()
        w = self.weight
        wq = w + self.lam * (fake_quantize_weight(w, "ternary") - w).detach()
        return F.linear(xq, wq.to(xq.dtype) if not torch.is_autocast_enabled(x.device.type) else wq, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, lam={self.lam}"


def is_skipped(name: str, skip: tuple[str, ...]) -> bool:
    """True if a module name matches a skip entry: the full name, or one dotted component
    ("lm_head" skips "lm_head" and "model.lm_head"; "mlp.down_proj" skips "layers.0.mlp.down_proj")."""
    return any(s and (name == s or name.endswith("." + s) or s in name.split(".")) for s in skip)


def replace_linears(model: nn.Module, make, skip: tuple[str, ...] = ("lm_head",), types=(nn.Linear,)) -> list[str]:
    """Replace every module of `types` whose name is not skipped by `make(name, module)`, in place;
    returns the replaced names."""
    targets = [(name, mod) for name, mod in model.named_modules()
               if type(mod) in types and not is_skipped(name, skip)]
    for name, mod in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make(name, mod))
    return [name for name, _ in targets]


def quantize_model(model: nn.Module, fmt: str = "nf4", skip: tuple[str, ...] = ("lm_head",), blocksize: int = 64,
                   double_quant: bool = True, compute_dtype: torch.dtype | None = None) -> nn.Module:
    """Replace every nn.Linear whose name is not skipped (see `is_skipped`) by a QuantLinear, in place;
    returns the model. Tied weights (e.g. lm_head = embeddings) are left alone when skipped."""
    replace_linears(model, lambda _n, lin: QuantLinear.from_linear(lin, fmt, blocksize, double_quant, compute_dtype),
                    skip)
    return model
