"""Where metrics go besides the run's metrics.jsonl: TensorBoard or Weights & Biases.

Both are optional installs (`pip install 'llmlab[track]'`); asking for one that is missing
is a one-line error. wandb honours its own environment (WANDB_MODE=offline writes to
disk only, WANDB_PROJECT, ...); llmlab passes the run folder as its `dir` and the resolved
config as its config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmlab.config import to_dict
from llmlab.errors import UserError


class Tracker:
    def log(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("train.tracker=tensorboard needs the tensorboard package: "
                            "pip install 'llmlab[track]'") from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, run_dir: Path, cfg: Any, project: str) -> None:
        try:
            import wandb
        except ImportError:
            raise UserError("train.tracker=wandb needs the wandb package: pip install 'llmlab[track]'") from None
        self.run = wandb.init(project=project, dir=str(run_dir), config=to_dict(cfg), name=run_dir.name)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def make_tracker(kind: str, run_dir: Path, cfg: Any, project: str) -> Tracker:
    if kind == "tensorboard":
        return TensorBoardTracker(run_dir)
    if kind == "wandb":
        return WandbTracker(run_dir, cfg, project)
    return Tracker()
