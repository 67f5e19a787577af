"""Checkpoints for exact resume.

    runs/<name>/checkpoints/step-N/state.pt
      trainable  {param name: tensor}     the adapter (or every trainable weight)
      optimizer, scheduler                state dicts
      rng        torch (+ CUDA) RNG states  dropout continues identically
      position   {step, epoch, group}     the next micro-batch group of epoch `epoch`
      result     trained tokens, validation history, best so far (+ best weights)

Batches are a pure function of (seed, epoch) (`make_batches`), so (epoch, group) is the data
position. A checkpoint is written to `step-N.tmp/` and renamed: a run killed mid-write leaves
no half checkpoint that looks complete. The last `keep` checkpoints are kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(ckpt_dir: Path, model, opt, sched, position: dict, result: dict, keep: int = 2) -> Path:
    out = ckpt_dir / f"step-{position['step']}"
    tmp = ckpt_dir / f"step-{position['step']}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    state = {
        "trainable": trainable_state(model),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        "position": position,
        "result": result,
    }
    torch.save(state, tmp / "state.pt")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    for old in sorted(list_checkpoints(ckpt_dir))[:-keep]:
        shutil.rmtree(ckpt_dir / f"step-{old}", ignore_errors=True)
    return out


def list_checkpoints(ckpt_dir: Path) -> list[int]:
    if not ckpt_dir.is_dir():
        return []
    steps = []
    for p in ckpt_dir.iterdir():
        if p.name.startswith("step-") and not p.name.endswith(".tmp") and (p / "state.pt").exists():
            steps.append(int(p.name.split("-")[1]))
    return sorted(steps)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    steps = list_checkpoints(ckpt_dir)
    return ckpt_dir / f"step-{steps[-1]}" if steps else None


def load_checkpoint(path: Path, model, opt, sched) -> dict:
    """Restore weights, optimizer, scheduler and RNG; returns the saved position and result."""
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in state["trainable"].items():
            params[name].copy_(t)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return {"position": state["position"], "result": state["result"]}
