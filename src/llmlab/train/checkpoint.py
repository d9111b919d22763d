"""Training checkpoints: a model folder plus the trainer's state, written atomically, the last N kept.

    RUN/checkpoints/step-0000200/
        model.yaml, model.safetensors, tokenizer.json    a model folder (llmlab.model.io): loadable as --model
        trainer_state.pt     step, optimizer state, counters, and with LoRA the trainable tensors
                             (adapters, a reward head): torch.load(weights_only=True)
        config.yaml          the run's resolved config

The folder is written as `.step-0000200.tmp` and renamed into place, so a crash mid-save
leaves the previous checkpoints whole and no half checkpoint that looks complete. The
trainer state holds only tensors and plain Python values, so it loads with
`weights_only=True`: nothing is unpickled. The data position and the RNG need no state:
the data order is a function of the example's global position and the torch seed a function
of (step, rank) (train/step.py), so a resumed run reads and draws exactly what the
uninterrupted run would have. To resume, a trainer builds its model from the checkpoint's
model folder (full fine-tuning) or from the base model plus `trainable` (LoRA), then
`restore` puts the optimizer and counters back.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from llmlab.config import load_config, to_yaml
from llmlab.errors import UserError
from llmlab.files import write_text_atomic

T = TypeVar("T")
STATE_FILE = "trainer_state.pt"
PREFIX = "step-"


def save_checkpoint(root: Path, step: int, *, write_model: Callable[[Path], None], optimizer_state: dict[str, Any],
                    cfg: Any, counters: dict[str, Any], keep: int,
                    trainable: dict[str, torch.Tensor] | None = None) -> Path:
    """Write RUN/checkpoints/step-N atomically and delete all but the `keep` newest. `write_model(dir)`
    writes the model folder (llmlab's save_weights, or an alignment policy's save_policy);
    `trainable` holds the tensors a LoRA run needs on top of its base model."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:07d}"
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write_model(tmp)
    torch.save({"step": step, "optimizer": optimizer_state, "counters": counters, "trainable": trainable or {}},
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


def last_checkpoint(run_dir: Path) -> str:
    """The newest complete checkpoint of a run folder, as the NaN stop names it."""
    found = list_checkpoints(run_dir / "checkpoints")
    return str(found[-1]) if found else "none (no checkpoint was written yet)"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a LoRA run trains (adapters, and a reward head), by parameter name, on the CPU."""
    model = getattr(model, "module", model)
    return {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}


def restore(checkpoint: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, dict[str, Any]]:
    """Put a checkpoint's trainable tensors (if it has any), optimizer state and counters back;
    return (step, counters). The model was built from the checkpoint's model folder, or, with LoRA,
    from its base model: its `trainable` tensors go in here."""
    state = load_trainer_state(checkpoint)
    trainable = state.get("trainable") or {}
    if trainable:
        names = {n for n, _ in model.named_parameters()}
        missing = sorted(set(trainable) - names)
        if missing:
            raise UserError(f"{checkpoint}: its trained tensors do not fit this model ({missing[0]}, ...); "
                            "resume with the lora.* settings it was trained with")
        model.load_state_dict(trainable, strict=False)
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), dict(state["counters"])


def resumed_config(cls: type[T], resume: str, overrides: tuple[str, ...] = (),
                   flags: dict[str, Any] | None = None) -> T:
    """The config a checkpoint was trained with, plus the flags and `overrides` given now (e.g. a
    larger train.max_steps), with `resume` set to the checkpoint folder."""

    checkpoint = find_checkpoint(resume)
    cfg = load_config(cls, checkpoint / "config.yaml", overrides, flags=flags)
    return replace(cfg, resume=str(checkpoint))


def resume_step(cfg: Any) -> int | None:
    """The step of the checkpoint `cfg.resume` names; None for a fresh run."""
    return int(load_trainer_state(Path(cfg.resume))["step"]) if cfg.resume else None


def with_resume(cfg: T, ctx: Any) -> T:
    """The config a command runs with: as given, or, with `resume=...`, the checkpoint's own config
    with the flags and overrides given now on top (ctx: the command's Context)."""
    if not getattr(cfg, "resume", ""):
        return cfg
    flags = {k: v for k, v in ctx.flags.items() if k != "resume"}
    overrides = tuple(o for o in ctx.overrides if not o.startswith("resume="))
    return resumed_config(type(cfg), cfg.resume, overrides, flags)
