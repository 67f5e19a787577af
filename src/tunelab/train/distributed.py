"""Training on N processes (torch.distributed, started by `tunelab train --nproc N`, `torchrun` or
`accelerate launch`): who this process is, its share of the data, and the collectives the engine needs.

    world W = WORLD_SIZE, rank = RANK, local rank = LOCAL_RANK (set by every launcher; absent: W = 1)
    global batch = batch_size x grad_accum x W examples per optimizer step

The engine's data position is global: an optimizer step trains the micro-batch group
batches[g : g + grad_accum * W] of `make_batches` (a pure function of seed and epoch), and rank r
trains its micro-batches group[r::W] (`shard`). A resumed run restarts at the checkpoint's g, so
every rank takes the same share it would have taken without the interruption.

Each micro-batch's loss is divided by the micro-batches in the *global* group, every rank runs
backward on its own ones without any communication (DDP's `no_sync` for every micro-batch but the
last), and at the accumulation boundary `sync_grads` sums the gradients over the ranks in one
all-reduce of a flat buffer (what DDP's reducer does on the last micro-batch). So W processes with
grad_accum A compute the same update as one process with grad_accum A x W, up to the order of a
floating-point sum. A rank whose share of a short last group is empty contributes zeros.

Why not `DistributedDataParallel(model)`: DDP reduces gradients only for a forward that goes through
its own `forward`, and the engine's loss runs the decoder and the fused head + loss directly
(ops/linear_ce.py, ops/shared_prefix.py). FSDP and DeepSpeed (accelerate configs with
`distributed_type: FSDP | DEEPSPEED`) need accelerate's wrapper: there the engine hands the model and
optimizer to `Accelerator.prepare` and the loss goes through the wrapped model's forward
(`accelerate_kind`, engine.py).

Process group: `accelerate.PartialState` (gloo on CPU, nccl on CUDA), the same state accelerate's
launcher and TRL's Trainer use. Device: cuda:LOCAL_RANK on CUDA (models/load.py: pick_device).
"""

from __future__ import annotations

import os

import torch


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes the run directory, checkpoints, logs and reports."""
    return rank() == 0


def accelerate_kind() -> str | None:
    """'fsdp' or 'deepspeed' when `accelerate launch` was given such a config (its ACCELERATE_USE_* env), else None."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true"):
        return "fsdp"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() in ("1", "true"):
        return "deepspeed"
    return None


def init(device: torch.device | None = None) -> None:
    """Join the process group (once; nothing with one process): accelerate's PartialState picks gloo
    on CPU and nccl on CUDA and reads the launcher's MASTER_ADDR / MASTER_PORT."""
    if world_size() == 1 or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    from accelerate import PartialState

    cpu = not torch.cuda.is_available() if device is None else device.type == "cpu"
    PartialState(cpu=cpu)


def barrier() -> None:
    if world_size() > 1:
        init()
        torch.distributed.barrier()


def shard(group: list, world: int | None = None, r: int | None = None) -> list:
    """This rank's micro-batches of a global group: group[r::W] (e.g. 4 micro-batches, W=2: rank 0 gets 0 and 2)."""
    world = world_size() if world is None else world
    r = rank() if r is None else r
    return group[r::world]


def sync_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over the ranks, in one all-reduce of a flat buffer (a missing
    gradient counts as zeros and is filled in)."""
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    i = 0
    for g in grads:
        g.copy_(flat[i:i + g.numel()].view_as(g))
        i += g.numel()


def sum_floats(*values: float, device: torch.device | None = None) -> list[float]:
    """The sums over the ranks of a few numbers (float64, so token counts stay exact)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def broadcast_params(params: list[torch.nn.Parameter]) -> None:
    """Rank 0's values into every rank's trainable parameters (they start equal: seeded alike; this makes sure)."""
    with torch.no_grad():
        for p in params:
            torch.distributed.broadcast(p.data, src=0)


def broadcast_object(obj):
    """Rank 0's `obj` (picklable, from our own process) on every rank."""
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


# ---- the local launcher (`tunelab train --nproc N`) ----------------------------------------------------------
LAUNCHER_ENV = "TUNELAB_LAUNCHER_PID"


def launch_local(nproc: int, argv: list[str]) -> int:
    """Run `python -m tunelab <argv>` on `nproc` local processes through torch.distributed.run (what
    `torchrun --standalone --nproc-per-node N -m tunelab ...` does, in this process); returns the
    exit code of the first process that failed, else 0. The workers die with this launcher
    (`die_with_launcher`): a launcher killed with SIGKILL leaves no training process behind."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    os.environ[LAUNCHER_ENV] = str(os.getpid())
    args = parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "tunelab", *argv])
    try:
        run(args)
    except ChildFailedError as e:
        codes = [f.exitcode for f in e.failures.values() if f.exitcode]
        return next((c for c in codes if c > 0), 1)
    return 0


def die_with_launcher() -> None:
    """Linux: ask for SIGKILL when the parent (our launcher) dies (prctl PR_SET_PDEATHSIG); only in
    processes `launch_local` started."""
    launcher = os.environ.get(LAUNCHER_ENV)
    if not launcher or world_size() == 1 or os.uname().sysname != "Linux":
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    if os.getppid() == 1:  # the launcher died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)
