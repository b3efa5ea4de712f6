"""Multi-process training under ``torchrun``: read the launcher's environment, start and stop the
process group, and the few collectives training needs.

``torchrun --nproc_per_node=N -m epiformer_cli train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; nothing else is needed. NCCL is used on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from epiformer_cli.runs.shards import Torchrun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv(Torchrun):
    """Where this process sits: ``rank`` of ``world_size`` processes, ``local_rank`` on its node
    (the run layer's :class:`~epiformer_cli.runs.shards.Torchrun`, with training's names)."""

    local_rank: int = 0

    @property
    def world_size(self) -> int:
        return self.world

    @property
    def enabled(self) -> bool:
        return self.active


def env_from_launcher() -> DistEnv:
    """The :class:`DistEnv` that ``torchrun`` describes in the environment (single process if none),
    as the run layer's one reader of it (:class:`~epiformer_cli.runs.shards.Torchrun`) parses it."""
    launcher = Torchrun.from_environ()
    if not launcher.active:
        return DistEnv()
    return DistEnv(launcher.rank, launcher.world, launcher.node_rank)


def init(env: DistEnv, device: torch.device) -> None:
    """Join the process group (no-op for one process)."""
    if not env.enabled or (dist.is_available() and dist.is_initialized()):
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    log.debug("rank %d of %d joined the %s process group", env.rank, env.world_size, backend)


def shutdown(env: DistEnv, wait: bool = False) -> None:
    """Leave the process group (no-op for one process). ``wait``: first wait until every process
    is here, for a run that ended well. Without it, a process that left while another still worked
    (rank 0 writing the test row and the learning curve) was sometimes aborted by gloo at its exit
    ("terminate called without an active exception", about 1 run in 10 on 2 CPU processes). Not
    after an error: the others may never arrive."""
    if env.enabled and dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv, device: torch.device) -> torch.Tensor:
    """Sum a (CPU) tensor over all processes; returns it on the CPU."""
    if not env.enabled:
        return tensor
    t = tensor.to(device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def first_of(obj, env: DistEnv):
    """The first of every process's ``obj`` that is not None (in rank order), on every process; None
    when all are None. Every process waits here for all the others (a barrier that carries a result,
    such as the one process's error that must stop them all)."""
    if not env.enabled:
        return obj
    objects = [None] * env.world_size
    dist.all_gather_object(objects, obj)
    return next((o for o in objects if o is not None), None)


def broadcast_object(obj, env: DistEnv):
    """Rank 0's ``obj`` on every rank."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average_buffers(model: torch.nn.Module, env: DistEnv) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over processes, so that every
    rank evaluates the same network."""
    if not env.enabled:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf /= env.world_size


def weights_in_sync(model: torch.nn.Module, env: DistEnv) -> bool:
    """True when every rank holds bit-identical parameters (checked on a float64 checksum)."""
    if not env.enabled:
        return True
    with torch.no_grad():
        parts = [p.detach().double().flatten() for p in model.parameters()]
        weights = torch.cat(parts)
        idx = torch.arange(weights.numel(), dtype=torch.float64)
        local = torch.stack([weights.sum(), (weights * torch.cos(idx)).sum()])
    device = next(model.parameters()).device
    lo, hi = local.clone().to(device), local.clone().to(device)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(torch.equal(lo, hi))
