"""Data-parallel training under torchrun, without DistributedDataParallel.

Launch: ``torchrun --nproc_per_node=N -m lenet5 train --engine torch``. The design:

- every rank builds the same engine (same seed -> same initial weights) and iterates the SAME global
  batches (same data seed);
- ``TorchEngine.train_step`` takes its rank's contiguous share of the global batch, computes the summed
  per-sample loss over that share divided by the GLOBAL batch size, backpropagates, all-reduces (SUM) the
  gradients in one flat buffer, then applies penalties, clipping and the optimizer step identically on every
  rank, so the weights stay equal everywhere and match a single-process run up to float noise;
- ``logits`` runs the whole batch locally; only rank 0 writes files.

Without torchrun (WORLD_SIZE unset or 1) every function here is a cheap no-op: rank 0 of 1.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun describes in the environment; returns (rank, world_size).

    Uses NCCL when CUDA is available (and pins this process to cuda:LOCAL_RANK), else Gloo, with torchrun's
    env:// rendezvous (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE). Safe to call more than once.
    """
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if env_world > 1 and not is_initialized():
        if not dist.is_available():
            from lenet5.errors import Lenet5Error

            raise Lenet5Error("this PyTorch build has no torch.distributed; run without torchrun")
        use_cuda = torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://")
    return rank(), world_size()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_initialized() and world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call once at the end of a torchrun process)."""
    if is_initialized():
        dist.destroy_process_group()


def shard_bounds(n: int, rank_: int, world: int) -> tuple[int, int]:
    """Contiguous share [start, stop) of n samples for rank_ of world; sizes differ by at most one."""
    base, extra = divmod(n, world)
    start = rank_ * base + min(rank_, extra)
    return start, start + base + (1 if rank_ < extra else 0)


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place SUM over all ranks (no-op in a single process)."""
    if is_initialized() and world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
