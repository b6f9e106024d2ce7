"""Training on several processes: what ``torchrun`` tells each one, and the few collectives train needs.

``torchrun --nproc_per_node N -m rawvid train ...`` starts N copies of ``rawvid train`` with
RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE set (and MASTER_ADDR/PORT for the rendezvous).
Each process trains a DistributedDataParallel replica on its shard of the clips with its share
of the batch; gradients are averaged (gloo on CPUs, NCCL on GPUs), so every replica takes the
same step. Rank 0 alone writes checkpoints, weights, logs and the model card. Without those
variables (a plain ``rawvid train``) nothing here starts and training is one process, as before.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

#: a collective waits this long for the others (rank 0 validates while the rest wait at a barrier)
TIMEOUT = _dt.timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """The one process that writes files and logs."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer (set by torchrun)") from None


def world_from_env() -> World:
    """The world torchrun describes in the environment (one process when it does not)."""
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_size = _env_int("LOCAL_WORLD_SIZE", size)
    local_rank = _env_int("LOCAL_RANK", rank)
    if size < 1 or not 0 <= rank < size or not 0 <= local_rank < local_size:
        raise ValueError(f"inconsistent torchrun environment: RANK {rank}, WORLD_SIZE {size}, "
                         f"LOCAL_RANK {local_rank}, LOCAL_WORLD_SIZE {local_size}")
    return World(rank, size, local_rank, local_size)


def start(world: World, device: str) -> str:
    """Join the process group (gloo for CPUs, NCCL for GPUs); returns this process's device."""
    if not world.distributed:
        return device
    if device.startswith("cuda"):
        torch.cuda.set_device(world.local_rank)
        device = f"cuda:{world.local_rank}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=TIMEOUT)
    return device


def stop(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def mean(world: World, values: list[float], device: str = "cpu") -> list[float]:
    """The mean of ``values`` over all processes (each process passes its own)."""
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / world.size).tolist()


def threads_per_process(world: World) -> int:
    """This process's share of the machine's cores (RAWVID_THREADS overrides)."""
    from .pipeline import cpu_threads

    if os.environ.get("RAWVID_THREADS"):
        return cpu_threads()
    return max(1, (os.cpu_count() or 1) // world.local_size)
