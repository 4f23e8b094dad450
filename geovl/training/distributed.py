"""Process-group set-up and teardown for a training run, single process or under ``torchrun``.

A run is distributed when ``WORLD_SIZE`` > 1 (as ``torchrun`` sets it, with ``RANK`` and ``LOCAL_RANK``): each
process then joins one process group (NCCL on CUDA, gloo on CPU) and drives the GPU numbered by its local rank.
Rank 0 is the main process: it alone writes files. Every helper here is a no-op in a single process, so a
training loop calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from geovl.models.device import resolve_device

__all__ = ["DistInfo", "all_gather_objects", "barrier", "init_distributed", "shutdown_distributed"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run.

    Attributes:
        rank: global rank (0 is the main process).
        world: number of processes.
        local_rank: rank on this machine (the CUDA device index it drives).
        owns_group: this process created the process group (and so destroys it at the end).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the process that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.world > 1


def init_distributed(device_pref: str) -> tuple[DistInfo, torch.device]:
    """Join the process group ``torchrun`` describes (if any) and pick this process's device.

    ``device_pref`` is a :func:`geovl.models.device.resolve_device` preference (``auto``, ``cpu``, ``cuda``...); in
    a distributed run ``auto`` or ``cuda`` means the GPU numbered by the local rank when CUDA is available.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device_pref)
    if "RANK" not in os.environ:
        raise ValueError(f"WORLD_SIZE={world} but RANK is not set: start distributed runs with torchrun")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return DistInfo(rank, world, local, owns), device


def barrier(info: DistInfo) -> None:
    """Wait for every process of the run (nothing to wait for in a single process)."""
    if info.distributed:
        dist.barrier()


def all_gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` in a single process."""
    if not info.distributed:
        return [obj]
    gathered: list[Any] = [None] * info.world
    dist.all_gather_object(gathered, obj)
    return gathered


def shutdown_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
