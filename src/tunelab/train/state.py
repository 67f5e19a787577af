"""Checkpoints for exact resume: tensors in safetensors, everything else in JSON, never a pickle.

    runs/<name>/checkpoints/step-N/
      trainable.safetensors  {param name: tensor}          the adapter (or every trainable weight)
      optimizer.safetensors  {"<param index>.<key>": tensor} AdamW exp_avg, exp_avg_sq, step (a nested
                             state, bitsandbytes' 8-bit one: "<param index>.<key>/<sub key>")
      rng.safetensors        {"torch": uint8, "cuda.<i>": uint8}  dropout continues identically
      best.safetensors       {param name: tensor}          the best evaluation's weights (only when held)
      state.json             written last: format + version; position {step, epoch, group} (the next
                             micro-batch group of epoch `epoch`; + pending_eval: the epoch position of an
                             evaluation a Ctrl-C cut short, done first on resume; + final: true for the
                             checkpoint of the run's last step); scheduler state dict; optimizer
                             param_groups + non-tensor per-parameter values; result (trained tokens,
                             val history, best_val, best_epoch, bad_evals). Floats that JSON cannot
                             hold (nan, inf) are written as {"__float__": "nan"}.

Batches are a pure function of (seed, epoch) (`make_batches`), so (epoch, group) is the data
position; position["world"] is the number of processes the run trained on (group counts global
micro-batches: train/distributed.py), and resuming on another number is refused by the engine. A checkpoint is written to `step-N.tmp/` and renamed: a run killed mid-write leaves
no half checkpoint that looks complete (state.json, written last, marks a complete one). The
last `keep` checkpoints are kept (train.keep_checkpoints: all keeps every one); an older one is renamed
to `step-N.del` before it is deleted, so an interrupted prune never leaves a half one under its name.
`prune_finished` applies train.keep_checkpoints to a finished run (none: the folder goes).

Loading reads only safetensors and JSON, so resuming a run directory from anyone cannot run
code. A step folder in the old pickle format (`state.pt` without `state.json`), a pickle under
any of the names above, or a damaged file raises `TunelabError`; nothing is ever unpickled.
The one exception is a TRL task's checkpoint (`adopt_trainer_checkpoint`: the transformers Trainer's
own files, format transformers-trainer), which the Trainer reads with torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tunelab.errors import TunelabError

FORMAT, VERSION = "tunelab-checkpoint", 1


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, torch.Tensor]:
    """The RNG states a checkpoint restores: {"torch": ..., "cuda.<i>": ...}."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return rng


def save_checkpoint(ckpt_dir: Path, model, opt, sched, position: dict, result: dict, keep: int | None = 2,
                    rng: dict | None = None) -> Path:
    """Write `ckpt_dir/step-<position.step>/` atomically and prune to the last `keep` (None: keep all);
    returns it. `rng` = `rng_state()` of the moment the position describes (default: now).

    `result` may hold "best_state" ({name: tensor} or None): it goes to best.safetensors."""
    out = ckpt_dir / f"step-{position['step']}"
    tmp = ckpt_dir / f"step-{position['step']}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    result = dict(result)
    best = result.pop("best_state", None)
    opt_state = opt.state_dict()
    opt_tensors, opt_values = {}, {}
    for i, per_param in opt_state["state"].items():
        opt_values[str(i)] = {k: _values(v) for k, v in per_param.items() if not isinstance(v, torch.Tensor)}
        opt_tensors.update({f"{i}.{k}": v for k, v in per_param.items() if isinstance(v, torch.Tensor)})
        for k, v in per_param.items():  # bitsandbytes nests its 8-bit state: {"__bnb_..__": {"state1": ...}}
            if isinstance(v, dict):
                # cloned: its quantization maps (qmap1, qmap2) are one tensor shared by every parameter
                opt_tensors.update({f"{i}.{k}/{sk}": t.clone() for sk, t in v.items() if isinstance(t, torch.Tensor)})
    rng = rng if rng is not None else rng_state()
    _save_tensors(tmp / "trainable.safetensors", trainable_state(model))
    _save_tensors(tmp / "optimizer.safetensors", opt_tensors)
    _save_tensors(tmp / "rng.safetensors", rng)
    if best is not None:
        _save_tensors(tmp / "best.safetensors", best)
    state = {"format": FORMAT, "version": VERSION, "position": position, "scheduler": sched.state_dict(),
             "optimizer": {"param_groups": opt_state["param_groups"], "state": opt_values},
             "result": result, "best_state": best is not None}
    (tmp / "state.json").write_text(json.dumps(_encode(state), allow_nan=False, indent=1), encoding="utf-8")
    return _publish(tmp, out, keep)


def _publish(tmp: Path, out: Path, keep: int | None) -> Path:
    """Rename the complete checkpoint folder `tmp` to `out` (step-N), prune to the last `keep` (None:
    keep all) and sweep what aborted saves and prunes left; returns `out`."""
    ckpt_dir = out.parent
    if out.exists():
        _remove(out)
    tmp.rename(out)
    if keep is not None and list_checkpoints(ckpt_dir)[:-keep]:
        _before_prune(ckpt_dir)
        for old in list_checkpoints(ckpt_dir)[:-keep]:
            _remove(ckpt_dir / f"step-{old}")
    for stale in ckpt_dir.glob("step-*.*"):  # a .tmp of an aborted save, a .del of an aborted prune
        shutil.rmtree(stale, ignore_errors=True)
    return out


TRAINER_FORMAT = "transformers-trainer"  # state.json of a checkpoint the transformers Trainer wrote (TRL tasks)


def adopt_trainer_checkpoint(folder: Path, out: Path, position: dict, keep: int | None = 2) -> Path:
    """Make the transformers Trainer's checkpoint `folder` (checkpoint-N, complete: the Trainer has
    saved it) the run's `out` (step-N): state.json {format: transformers-trainer, version, position
    {step, epoch, final}} is written into it last, then it is renamed, as `save_checkpoint` does, and
    pruned to the last `keep`. A Trainer killed mid-save leaves only a checkpoint-N folder, never a
    step-N that looks complete. Its files are the Trainer's: weights in safetensors, optimizer,
    scheduler and RNG in .pt files that the Trainer reads back with torch.load(weights_only=True)
    (the restricted unpickler: tensors and plain values only, no code)."""
    state = {"format": TRAINER_FORMAT, "version": VERSION, "position": position}
    (folder / "state.json").write_text(json.dumps(_encode(state), allow_nan=False, indent=1), encoding="utf-8")
    return _publish(folder, out, keep)


# Hooks called with a checkpoints folder just before checkpoints are deleted from it (pruned to the last
# `keep` while training, or after DONE by train.keep_checkpoints): the job worker records there each one
# it has not seen yet (serve/job_worker.py), so none goes unlisted however fast it is pruned.
BEFORE_PRUNE: list = []


def _before_prune(ckpt_dir: Path) -> None:
    for hook in list(BEFORE_PRUNE):
        try:
            hook(ckpt_dir)
        except Exception:  # a hook's fault never stops training or loses a checkpoint
            import logging

            logging.getLogger("tunelab.train").exception("a before-prune hook failed")


def _remove(step_dir: Path) -> None:
    """Delete a checkpoint folder: renamed away first, so it is never seen half deleted."""
    gone = step_dir.with_name(step_dir.name + ".del")
    if gone.exists():
        shutil.rmtree(gone, ignore_errors=True)
    step_dir.rename(gone)
    shutil.rmtree(gone, ignore_errors=True)


def prune_finished(ckpt_dir: Path, keep: str) -> None:
    """train.keep_checkpoints of a finished run: all (as is) | last (the latest one) | none (the folder goes)."""
    if keep == "all" or not ckpt_dir.is_dir():
        return
    _before_prune(ckpt_dir)
    steps = list_checkpoints(ckpt_dir)
    for old in steps[:-1] if keep == "last" else steps:
        _remove(ckpt_dir / f"step-{old}")
    if keep == "none":
        shutil.rmtree(ckpt_dir, ignore_errors=True)


def list_checkpoints(ckpt_dir: Path) -> list[int]:
    """Steps of the complete checkpoints (a state.json), ascending; `.tmp` folders are not ones.

    A step folder holding only a pickle (`state.pt`, the format before this one) raises
    TunelabError instead of being skipped: resuming must not silently go back or start over."""
    if not ckpt_dir.is_dir():
        return []
    steps = []
    for p in ckpt_dir.iterdir():
        if not (p.name.startswith("step-") and p.name[5:].isdigit()):
            continue
        if (p / "state.json").exists():
            steps.append(int(p.name[5:]))
        elif (p / "state.pt").exists():
            _refuse_pickle(p / "state.pt")
    return sorted(steps)


def is_final(step_dir: Path) -> bool:
    """Is this the checkpoint of a run's last step (written so that a Ctrl-C after training loses nothing)?"""
    try:
        return bool(json.loads((Path(step_dir) / "state.json").read_text(encoding="utf-8"))["position"].get("final"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    steps = list_checkpoints(ckpt_dir)
    return ckpt_dir / f"step-{steps[-1]}" if steps else None


def load_checkpoint(path: Path, model, opt, sched) -> dict:
    """Restore weights, optimizer, scheduler and RNG from `path` (a step folder); returns
    {"position": ..., "result": ...} with result["best_state"] = {name: tensor} or None.

    TunelabError for a pickle, a damaged or foreign file, or weights that do not fit `model`."""
    path = Path(path)
    if not (path / "state.json").exists() and (path / "state.pt").exists():
        _refuse_pickle(path / "state.pt")
    state = _load_json(path / "state.json")
    if state.get("format") != FORMAT or state.get("version") != VERSION:
        raise TunelabError(f"{path / 'state.json'} is not a tunelab checkpoint (format {state.get('format')!r}, "
                           f"version {state.get('version')!r})", where="train.resume",
                           hint=f"delete {path.parent} to start fresh")
    trainable = _load_tensors(path / "trainable.safetensors")
    params = dict(model.named_parameters())
    wanted = {n for n, p in params.items() if p.requires_grad}
    if set(trainable) != wanted:
        raise TunelabError(f"{path} does not fit the model (weights {sorted(set(trainable) ^ wanted)[:2]} differ)",
                           where="train.resume", hint="resume with the config the run was started with")
    with torch.no_grad():
        for name, t in trainable.items():
            params[name].copy_(t)
    per_param = {int(i): dict(v) for i, v in state["optimizer"]["state"].items()}
    for key, t in _load_tensors(path / "optimizer.safetensors").items():
        i, k = key.split(".", 1)
        if "/" in k:  # a nested state (bitsandbytes): "<i>.<key>/<sub key>"
            k, sub = k.split("/", 1)
            per_param.setdefault(int(i), {}).setdefault(k, {})[sub] = t
        else:
            per_param.setdefault(int(i), {})[k] = t
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in state["optimizer"]["param_groups"]]
    opt.load_state_dict({"state": per_param, "param_groups": groups})
    sched.load_state_dict(state["scheduler"])
    rng = _load_tensors(path / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    cuda = [rng[f"cuda.{i}"] for i in range(sum(k.startswith("cuda.") for k in rng))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    result = dict(state["result"])
    result["best_state"] = _load_tensors(path / "best.safetensors") if state["best_state"] else None
    return {"position": state["position"], "result": result}


def _values(v):
    """The non-tensor part of an optimizer state value (a nested dict keeps its non-tensor entries)."""
    return {k: x for k, x in v.items() if not isinstance(x, torch.Tensor)} if isinstance(v, dict) else v


# ---- files -------------------------------------------------------------------------------------------------

def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: t.detach().cpu().contiguous() for k, t in tensors.items()}, str(path))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:
        _refuse_unreadable(path, e)


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"), object_hook=_decode_float)
    except Exception as e:
        _refuse_unreadable(path, e)


def _refuse_unreadable(path: Path, error: Exception):
    if _looks_like_pickle(path):
        _refuse_pickle(path)
    raise TunelabError(f"cannot read checkpoint file {path} ({type(error).__name__}: {error})",
                       where="train.resume", hint=f"the checkpoint is damaged: delete {path.parent}") from None


def _looks_like_pickle(path: Path) -> bool:
    """Pickle protocol 2+ opens with 0x80; torch.save's zip container with "PK"."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return head[:1] == b"\x80" or head == b"PK"


def _refuse_pickle(path: Path):
    raise TunelabError(f"{path} is a pickle (an older tunelab format, or not from tunelab); "
                       "tunelab does not load pickles because they can run code", where="train.resume",
                       hint=f"start fresh: train without --resume, or delete {path.parent.parent}")


def _encode(x):
    """JSON-ready copy of `x`: tuples as lists, non-finite floats as {"__float__": "nan" | "inf" | "-inf"}."""
    if isinstance(x, float) and not math.isfinite(x):
        return {"__float__": repr(float(x))}
    if isinstance(x, dict):
        return {k: _encode(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_encode(v) for v in x]
    return x


def _decode_float(d: dict):
    return float(d["__float__"]) if d.keys() == {"__float__"} else d
