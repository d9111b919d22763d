"""Multi-process training through torch.distributed, as launched by torchrun.

    torchrun --nproc_per_node=2 -m llmlab pretrain ...     (gloo on CPU, nccl on GPU)

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them training runs in one process
and nothing here initialises a process group. Data parallelism is DDP (gradients averaged
with all-reduce during backward), or FSDP2 (`fully_shard`: parameters, gradients and
optimiser state sharded over the processes) with `train.fsdp=true`. Rank 0 alone logs,
evaluates, samples and writes checkpoints; the others wait at a barrier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from llmlab.model.device import pick_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_preference: str) -> tuple[DistInfo, torch.device]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo(), pick_device(device_preference)
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_preference, info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device, *, fsdp: bool) -> nn.Module:
    """DDP or FSDP2 around `model` under torchrun; the model itself in one process."""
    if not info.enabled:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        return fully_shard(model)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def mean_over_ranks(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of a tensor over processes (itself in one process)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= info.world_size
    return values


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def sum_over_ranks(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum of a tensor over processes (itself in one process)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_text(value: str, info: DistInfo) -> str:
    """Rank 0's `value` on every process (a run folder's path, say)."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def process_rank() -> int:
    """This process's rank under torchrun (0 without it), readable after the process group is gone."""
    return int(os.environ.get("RANK", "0"))
