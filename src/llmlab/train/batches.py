"""How a step's global batch is split over processes and micro-batches, and the one accumulation rule.

    global batch: train.batch_size examples (sequences, chats, preference pairs)
      -> world_size processes, per_rank = batch_size / world_size each          (torchrun, DDP)
      -> micro-batches of `micro` examples, accum = per_rank / micro of them      (gradient accumulation)

The accumulation rule, the same in every trainer. Each loss is the mean, over the whole global
batch, of a per-unit loss, where a unit is either

    an example       (`example_mean`: a reward model's pair, a DPO pair), or
    a target token   (`token_mean`: pretraining, SFT, DPO's added NLL term).

A micro-batch adds the SUM of its units' losses times `scale = world_size / n_global` (n_global:
the units of the global batch, over every process) and calls backward; DDP's all-reduce then
divides the gradient by world_size. The step's gradient is therefore that of

        (1 / n_global) * sum over every unit u of the global batch of loss(u)

whatever the micro-batch size and the number of processes (tests/train/test_accumulation.py
checks it for the four trainers in float64). Averaging each micro-batch's own mean instead
would weigh a token of a short micro-batch more than one of a long one: the loss would
change with `train.micro_batch_size`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from llmlab.errors import UserError
from llmlab.train import distributed as D


@dataclass(frozen=True)
class BatchPlan:
    batch_size: int  # examples per optimiser step, over all processes
    per_rank: int  # examples per step on this process
    micro: int  # examples per forward

    @property
    def accum(self) -> int:
        return self.per_rank // self.micro

    def micro_batches(self) -> Iterator[tuple[int, int, bool]]:
        """(start, end, is_last) of each micro-batch within this process's part of the batch."""
        for start in range(0, self.per_rank, self.micro):
            yield start, start + self.micro, start + self.micro >= self.per_rank

    def first_example(self, step: int, rank: int) -> int:
        """Global position of this process's first example of `step` (data order is a function of it)."""
        return step * self.batch_size + rank * self.per_rank


def plan_batches(batch_size: int, micro_batch_size: int, world_size: int) -> BatchPlan:
    """The split of `batch_size` over `world_size` processes and micro-batches of `micro_batch_size`
    (0: the whole per-process batch), or a one-line error naming what does not divide."""
    if batch_size % world_size:
        raise UserError(f"train.batch_size ({batch_size}) must be a multiple of the number of processes "
                        f"({world_size})")
    per_rank = batch_size // world_size
    micro = micro_batch_size or per_rank
    if per_rank % micro:
        raise UserError(f"train.micro_batch_size ({micro}) must divide the per-process batch ({per_rank} = "
                        f"train.batch_size {batch_size} / {world_size} process(es))")
    return BatchPlan(batch_size, per_rank, micro)


def global_units(local: int, info: D.DistInfo, device: torch.device) -> int:
    """The number of loss units (examples or target tokens) of the step's global batch, from this
    process's count: one all-reduce of an integer."""
    return int(D.sum_over_ranks(torch.tensor(local, device=device, dtype=torch.long), info))


def unit_scale(n_global: int, info: D.DistInfo) -> float:
    """The factor on a micro-batch's summed loss (see the module docstring); 0 for an empty batch."""
    return info.world_size / n_global if n_global else 0.0


def accumulating(model: Any, is_last: bool) -> Any:
    """DDP's `no_sync` for every micro-batch but the last: gradients are all-reduced once per step."""
    if is_last or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()
