"""Training checkpoints: a model folder plus the trainer's state, written atomically, the last N kept.

    RUN/checkpoints/step-0000200/
        model.yaml, model.safetensors, tokenizer.json    a model folder (llmlab.model.io): loadable as --model
        trainer_state.pt     optimizer state, step, counters (torch.load(weights_only=True))
        config.yaml          the run's resolved config

The folder is written as `.step-0000200.tmp` and renamed into place, so a crash mid-save
leaves the previous checkpoints whole and no half checkpoint that looks complete. The
trainer state holds only tensors and plain Python values, so it loads with
`weights_only=True`: nothing is unpickled. The data position and the dropout RNG need no
state: both are functions of the step (token_data.py, pretrain.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from llmlab.config import to_yaml
from llmlab.errors import UserError
from llmlab.files import write_text_atomic

STATE_FILE = "trainer_state.pt"
PREFIX = "step-"


def save_checkpoint(root: Path, step: int, *, write_model: Callable[[Path], None], optimizer_state: dict[str, Any],
                    cfg: Any, counters: dict[str, Any], keep: int) -> Path:
    """Write RUN/checkpoints/step-N atomically and delete all but the `keep` newest. `write_model(dir)`
    writes the model folder (llmlab's save_weights, or an alignment policy's save_policy)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:07d}"
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write_model(tmp)
    torch.save({"step": step, "optimizer": optimizer_state, "counters": counters},
               tmp / STATE_FILE)
    write_text_atomic(tmp / "config.yaml", to_yaml(cfg))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def find_checkpoint(path: str | Path) -> Path:
    """`path` itself if it is a checkpoint, else the newest checkpoint of the run folder `path`."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    found = list_checkpoints(path / "checkpoints")
    if not found:
        raise UserError(f"{path}: no checkpoint to resume from (expected {STATE_FILE} or checkpoints/{PREFIX}*)")
    return found[-1]


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    try:
        return torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, in one line
        raise UserError(f"{checkpoint / STATE_FILE}: cannot read the trainer state ({type(e).__name__})") from None
