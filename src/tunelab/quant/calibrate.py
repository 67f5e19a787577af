"""Calibration: choose the clipping range of a uniform quantizer, for weights or activations.

Three rules, each returning the clipping value c (the quantizer then uses s = c / qmax and clamps):

    minmax      c = max|x|                               (no clipping; one outlier stretches s)
    percentile  c = the p-th percentile of |x| (p = 99.9) (clips the rarest 0.1%)
    mse         c = argmin_{c = r max|x|, r in [0.01, 1]} mean (x - Q_c(x))^2  (grid search over r)

Activations come from forward hooks: `collect_activations(model, batches)` runs the sample batches
once and keeps, per Linear layer, the running min/max of its input and a bounded random sample of
values (for the percentile and MSE rules).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

METHODS = ("minmax", "percentile", "mse")
_MAX_SAMPLE = 1 << 18  # values kept per observed tensor (262,144)


def _sample(x: torch.Tensor, k: int = _MAX_SAMPLE, seed: int = 0) -> torch.Tensor:
    """Flatten; keep a uniform random subset of at most k values (deterministic)."""
    flat = x.detach().reshape(-1).float()
    if flat.numel() <= k:
        return flat
    g = torch.Generator(device="cpu").manual_seed(seed)
    return flat[torch.randint(0, flat.numel(), (k,), generator=g).to(flat.device)]


def minmax_clip(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """c = max|x| (per row of `dim` = 1 for per-channel, scalar if None)."""
    return x.detach().abs().amax() if dim is None else x.detach().abs().amax(dim=dim)


def percentile_clip(x: torch.Tensor, pct: float = 99.9) -> torch.Tensor:
    """c = pct-th percentile of |x| over (a sample of) all values: scalar."""
    a = _sample(x).abs()
    k = max(1, min(a.numel(), int(round(pct / 100 * a.numel()))))
    return a.kthvalue(k).values


def _sym_error(x: torch.Tensor, c: torch.Tensor, qmax: int) -> torch.Tensor:
    """Mean squared error of symmetric quantization clipped at c, per row of x ([rows, cols], c [rows])."""
    s = (c.clamp(min=1e-12) / qmax)[:, None]
    xq = torch.clamp(torch.round(x / s), -qmax, qmax) * s
    return (x - xq).pow(2).mean(dim=1)


def mse_clip(x: torch.Tensor, bits: int = 8, per_channel: bool = False, grid: int = 100,
             min_ratio: float = 0.01) -> torch.Tensor:
    """Search r on a geometric grid over [min_ratio, 1] (`grid` points, 100 points over 0.01..1 = 4.8%
    steps) for c = r max|x| minimizing the symmetric
    quantization MSE; per row of a 2-D x when per_channel, else one scalar over (a sample of) x."""
    qmax = 2 ** (bits - 1) - 1
    rows = x.detach().float().reshape(x.shape[0], -1) if per_channel else _sample(x)[None, :]
    amax = rows.abs().amax(dim=1)
    best_c, best_err = amax.clone(), _sym_error(rows, amax, qmax)
    for r in torch.logspace(torch.log10(torch.tensor(min_ratio)).item(), 0.0, grid).tolist():
        c = amax * r
        err = _sym_error(rows, c, qmax)
        better = err < best_err
        best_c, best_err = torch.where(better, c, best_c), torch.where(better, err, best_err)
    return best_c if per_channel else best_c[0]


def clip_value(x: torch.Tensor, method: str = "minmax", bits: int = 8, pct: float = 99.9,
               per_channel: bool = False) -> torch.Tensor:
    """Dispatch to one of METHODS (per-channel only for minmax and mse)."""
    if method == "minmax":
        return minmax_clip(x.reshape(x.shape[0], -1), dim=1) if per_channel else minmax_clip(x)
    if method == "percentile":
        if per_channel:
            return torch.stack([percentile_clip(row, pct) for row in x.reshape(x.shape[0], -1)])
        return percentile_clip(x, pct)
    if method == "mse":
        return mse_clip(x, bits, per_channel=per_channel)
    raise ValueError(f"unknown calibration method {method!r}; one of {METHODS}")


@dataclass
class Observer:
    """Running statistics of one tensor stream: min, max, count, and a bounded value sample."""

    lo: float = float("inf")
    hi: float = float("-inf")
    count: int = 0
    samples: list[torch.Tensor] = field(default_factory=list)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach()
        self.lo = min(self.lo, x.min().item())
        self.hi = max(self.hi, x.max().item())
        self.count += x.numel()
        self.samples.append(_sample(x, _MAX_SAMPLE // 8, seed=len(self.samples)).cpu())

    def values(self) -> torch.Tensor:
        return _sample(torch.cat(self.samples)) if self.samples else torch.zeros(1)

    def clip(self, method: str = "percentile", bits: int = 8, pct: float = 99.9) -> float:
        if method == "minmax":
            return max(abs(self.lo), abs(self.hi))
        return float(clip_value(self.values(), method, bits, pct))


def collect_activations(model: nn.Module, batches, module_types=(nn.Linear,), names=None) -> dict[str, Observer]:
    """Run `model(**batch)` (dict batches) or `model(batch)` for each batch under no_grad with forward
    pre-hooks on every module of `module_types` (or only those in `names`); returns name -> Observer
    of the module's input."""
    observers: dict[str, Observer] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, module_types) and (names is None or name in names):
            obs = observers.setdefault(name, Observer())
            handles.append(mod.register_forward_pre_hook(lambda _m, args, obs=obs: obs.update(args[0])))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                model(**batch) if isinstance(batch, dict) else model(batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return observers


def calibrate_activations(model: nn.Module, batches, method: str = "percentile", bits: int = 8,
                          pct: float = 99.9) -> dict[str, float]:
    """name -> clipping value c for the input of every Linear layer (see module docstring)."""
    return {name: obs.clip(method, bits, pct) for name, obs in collect_activations(model, batches).items()}
