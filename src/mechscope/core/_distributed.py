"""The one seam between dictionary training and ``torch.distributed``; every helper is a no-op on one process.

Under ``torchrun --nproc_per_node N`` each process (rank) runs the same ``train`` call on the same data. Every
global batch is cut into N equal, disjoint blocks of rows, one per rank, and the dictionary's loss terms are
scaled so that their mean over ranks — what DistributedDataParallel's gradient averaging optimises — is the
term of the whole global batch. The run is then the single-process run up to the order of floating-point sums.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, TypeAlias

import torch
import torch.distributed as dist
from torch import Tensor

Group: TypeAlias = "dist.ProcessGroup | None"  # None: not distributed


@contextmanager
def group_from_env(device: torch.device) -> Iterator[None]:
    """Inside the block, the default process group exists when torchrun's environment asks for one.

    It is started (NCCL for CUDA devices, gloo otherwise) unless one exists or there is a single process, and
    then destroyed on leaving the block.
    """
    if not dist.is_available() or dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """``cuda`` without an index means this process's GPU (torchrun's ``LOCAL_RANK``) when distributed."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def rank_world() -> tuple[int, int]:
    """Rank of this process and the number of processes (0, 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def world_group() -> Group:
    """The default group when more than one process trains, else None."""
    return dist.group.WORLD if rank_world()[1] > 1 else None


def world_size(group: Group) -> int:
    """Processes in ``group`` (1 for None)."""
    return 1 if group is None else dist.get_world_size(group)


def all_reduce(t: Tensor, group: Group, op: Literal["sum", "min"] = "sum") -> Tensor:
    """Sum (or take the minimum of) ``t`` over ``group`` in place and return it (``t`` itself for None)."""
    if group is not None:
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MIN, group=group)
    return t


def all_gather(t: Tensor, group: Group) -> Tensor:
    """Concatenate every rank's ``t`` (same shape everywhere) along the first axis, in rank order."""
    if group is None:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, t.contiguous(), group=group)
    return torch.cat(parts)


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    if rank_world()[1] > 1:
        dist.barrier()
