"""One optimiser step's frame, shared by every trainer: before (seed, learning rate) and after
(reduce, clip, NaN policy, step) the trainer's own micro-batch loop.

    lr = begin_step(train, step, info)          dropout seed and lr: functions of the step
    ... micro-batches: loss.backward() ...      the trainer's (train/batches.py's accumulation rule)
    norm, applied = finish_step(model, optimizer, loss, train=..., lr=lr, done=step + 1, ...)

The NaN policy: a non-finite loss or gradient norm is never applied to the weights. With
`train.on_nan=stop` the run stops with one line that names the last good checkpoint (nothing
after it was saved); with `train.on_nan=skip` the update is dropped, counted in
`counters["nan_skips"]` and logged, and training goes on, until more than `train.max_nan_skips`
updates were dropped: then it stops as `stop` does. A non-finite held-out loss (`check_eval`)
always stops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from llmlab.errors import TrainingDiverged
from llmlab.train import distributed as D
from llmlab.train.checkpoint import last_checkpoint
from llmlab.train.config import TrainConfig
from llmlab.train.optim import clip_and_step
from llmlab.train.schedule import lr_at


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of (step, rank): dropout and any sampling in a step are functions of it, so a
    resumed run draws what the uninterrupted run drew. A CPU generator (mt19937) keeps only the low 32
    bits of its seed, so the run's seed is mixed into them (times an odd constant), not put above them:
    there, `seed * 2**32 + ...` gave every train.seed the same draws."""
    return (seed * 0x9E3779B1 + step * 1024 + rank) % 2**32


def begin_step(train: TrainConfig, step: int, info: D.DistInfo) -> float:
    """Seed torch for `step` on this process and return the step's learning rate."""
    torch.manual_seed(step_seed(train.seed, step, info.rank))
    return lr_at(step, lr=train.lr, warmup_steps=train.warmup_steps, max_steps=train.max_steps,
                 min_lr_ratio=train.min_lr_ratio)


class StepResult(NamedTuple):
    norm: float  # the gradient norm before clipping
    applied: bool  # False: a non-finite step skipped under train.on_nan=skip (its loss is not logged)


def finish_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: float, *, train: TrainConfig,
                lr: float, done: int, counters: dict[str, Any], run_dir: Path,
                log: Callable[[str], None]) -> StepResult:
    """Clip, apply the NaN policy, step. `loss` is the step's loss already averaged over processes
    (every process takes the same decision: the loss is reduced and the gradients all-reduced)."""
    norm = clip_and_step(model, optimizer, lr=lr, grad_clip=train.grad_clip, loss=loss)
    if math.isfinite(loss) and math.isfinite(norm):
        return StepResult(norm, True)
    what = f"loss {loss}, grad norm {norm}"
    if train.on_nan == "stop":
        log(f"step {done}: {what}: stopping (train.on_nan=stop)")
        raise TrainingDiverged(f"training diverged at step {done} ({what}); nothing was saved after it, the last "
                               f"good checkpoint is {last_checkpoint(run_dir)}; lower train.lr or set "
                               "train.on_nan=skip")
    counters["nan_skips"] = counters.get("nan_skips", 0) + 1
    if counters["nan_skips"] > train.max_nan_skips:
        raise TrainingDiverged(f"training diverged: {counters['nan_skips']} updates skipped, more than "
                               f"train.max_nan_skips={train.max_nan_skips} (the last at step {done}: {what}); the last "
                               f"good checkpoint is {last_checkpoint(run_dir)}; lower train.lr")
    log(f"step {done}: {what}; update skipped (train.on_nan=skip)")
    return StepResult(norm, False)


def check_eval(row: dict[str, float], *, done: int, run_dir: Path) -> None:
    """A held-out loss that is NaN or infinite stops the run whatever train.on_nan says: an evaluation
    cannot be skipped, and weights that give it are no model to keep training."""
    bad = {k: v for k, v in row.items() if isinstance(v, float) and k.endswith("loss") and not math.isfinite(v)}
    if bad:
        what = ", ".join(f"{k} is {v}" for k, v in bad.items())
        raise TrainingDiverged(f"training diverged: at step {done} the held-out {what}; the last good checkpoint "
                               f"is {last_checkpoint(run_dir)}; lower train.lr")


def due(done: int, every: int, max_steps: int) -> bool:
    """Whether a periodic action (log, eval, checkpoint) runs after step `done`: every `every` steps
    (0: never periodically) and always after the last step."""
    return done == max_steps or (every > 0 and done % every == 0)


class Window:
    """Means of logged values over the steps since the last log row (skipped steps left out). The partial
    sums live in `counters["window"]`, which every checkpoint saves, so that a run resumed between two
    log rows logs the row the uninterrupted run logs."""

    def __init__(self, counters: dict[str, Any]) -> None:
        self.state = counters.setdefault("window", {"sums": {}, "steps": 0})

    def add(self, values: dict[str, float]) -> None:
        sums = self.state["sums"]
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        self.state["steps"] += 1

    def pop(self) -> dict[str, float]:
        """The means, and a fresh window (no row when every step was skipped)."""
        steps, sums = self.state["steps"], self.state["sums"]
        means = {k: v / steps for k, v in sums.items()} if steps else {}
        self.state["sums"], self.state["steps"] = {}, 0
        return means
