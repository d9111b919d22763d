"""Training checkpoints: a model folder plus the trainer's state, written atomically, the last N kept.

    RUN/checkpoints/step-0000200/
        model.yaml, model.safetensors, tokenizer.json    a model folder (llmlab.model.io): loadable as --model
        trainer_state.pt     step, optimizer state, counters, and with LoRA the trainable tensors
                             (adapters, a reward head): torch.load(weights_only=True)
        config.yaml          the run's resolved config
        checkpoint.json      {"step", "good"}: good is false when an update was skipped since the last one

The folder is written as `.step-0000200.tmp` and renamed into place, so a crash mid-save
leaves the previous checkpoints whole and no half checkpoint that looks complete. The
trainer state holds only tensors and plain Python values, so it loads with
`weights_only=True`: nothing is unpickled. The data position and the RNG need no state:
the data order is a function of the example's global position and the torch seed a function
of (step, rank) (train/step.py), so a resumed run reads and draws exactly what the
uninterrupted run would have. To resume, a trainer builds its model from the checkpoint's
model folder (full fine-tuning) or from the base model plus `trainable` (LoRA), then
`restore` puts the optimizer and counters back. Resuming a run folder takes its newest intact
checkpoint (`find_checkpoint` passes over one whose files are truncated, saying so); pruning to
`train.keep_checkpoints` never removes the newest good checkpoint, which the NaN stop names.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from llmlab.config import load_config, to_yaml
from llmlab.errors import UserError
from llmlab.files import write_text_atomic
from llmlab.runs import outcome, run_status

T = TypeVar("T")
STATE_FILE = "trainer_state.pt"
INFO_FILE = "checkpoint.json"  # {"step", "good"}: read without loading the trainer state
PREFIX = "step-"


def save_checkpoint(root: Path, step: int, *, write_model: Callable[[Path], None], optimizer_state: dict[str, Any],
                    cfg: Any, counters: dict[str, Any], keep: int,
                    trainable: dict[str, torch.Tensor] | None = None, good: bool = True) -> Path:
    """Write RUN/checkpoints/step-N atomically and delete the older ones but the `keep` newest and the
    newest good one. `write_model(dir)` writes the model folder (llmlab's save_weights, or an
    alignment policy's save_policy); `trainable` holds the tensors a LoRA run needs on top of its base
    model; `good` is False when an update was skipped (train.on_nan=skip) since the last checkpoint,
    so that the last checkpoint before trouble is never pruned. A write that fails (a full disk)
    leaves no partial folder behind."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:07d}"
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_model(tmp)
        torch.save({"step": step, "optimizer": optimizer_state, "counters": counters, "trainable": trainable or {}},
                   tmp / STATE_FILE)
        write_text_atomic(tmp / "config.yaml", to_yaml(cfg))
        write_text_atomic(tmp / INFO_FILE, json.dumps({"step": step, "good": good}) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    found = list_checkpoints(root)
    good_ones = [c for c in found if is_good(c)]
    for old in found[:-keep]:
        if not good_ones or old != good_ones[-1]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def is_good(checkpoint: Path) -> bool:
    """Whether no update was skipped since the checkpoint before it (checkpoint.json; older checkpoints
    without one count as good)."""
    path = checkpoint / INFO_FILE
    return not path.is_file() or bool(json.loads(path.read_text(encoding="utf-8")).get("good", True))


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def find_checkpoint(path: str | Path, log: Callable[[str], None] | None = None) -> Path:
    """`path` itself if it is a checkpoint, else the newest intact checkpoint of the run folder `path`:
    a newer one whose files are truncated or unreadable (a crash mid-copy, a full disk) is passed
    over, saying so through `log` (stderr by default)."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    found = list_checkpoints(path / "checkpoints")
    if not found:
        raise UserError(f"{path}: no checkpoint to resume from (expected {STATE_FILE} or checkpoints/{PREFIX}*)")
    for checkpoint in reversed(found):
        problem = damage(checkpoint)
        if problem is None:
            return checkpoint
        message = f"warning: {checkpoint} is damaged ({problem}); trying the one before it"
        (log or (lambda m: print(m, file=sys.stderr)))(message)
    raise UserError(f"{path}: every checkpoint is damaged (the newest: {damage(found[-1])})")


def damage(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint's files, or None: the trainer state must load and every
    safetensors file must parse to its end."""
    from safetensors import safe_open  # here: only resuming reads checkpoints back

    try:
        torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:
        return f"{STATE_FILE}: {type(e).__name__}"
    for weights in sorted(checkpoint.glob("*.safetensors")):
        try:  # the header's offsets must fit in the file: a truncated file does not open
            with safe_open(str(weights), framework="pt"):
                pass
        except Exception as e:
            return f"{weights.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return None


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    try:
        return torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, in one line
        raise UserError(f"{checkpoint / STATE_FILE}: cannot read the trainer state ({type(e).__name__})") from None


def last_checkpoint(run_dir: Path) -> str:
    """The newest good checkpoint of a run folder (no update skipped since the one before), as the NaN
    stop names it."""
    found = [c for c in list_checkpoints(run_dir / "checkpoints") if is_good(c)]
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
        load_weights(model, trainable, checkpoint, strict=False)
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), dict(state["counters"])


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], checkpoint: Path, *,
                 strict: bool = True, hint: str = "resume without changing model.* or lora.*") -> None:
    """`model.load_state_dict(state)`, with a shape that changed since the checkpoint (model.* overrides
    given with --resume) as one line, ending in `hint`, instead of torch's page of size mismatches."""
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e).splitlines()[0])
        raise UserError(f"{checkpoint}: its weights do not fit the model as configured now ({first}); "
                        f"{hint}") from None


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
    overrides, flags = changes_given(ctx)
    return resumed_config(type(cfg), cfg.resume, overrides, flags)


def lab_config(cfg: T, ctx: Any, *, kind: str) -> T:
    """The config of a command made of several runs (the demo, the reward-hacking lab): as given, or, with
    `resume=FOLDER`, that folder's own config.yaml with the flags and overrides given now on top."""
    resume = getattr(cfg, "resume", "")
    if not resume:
        return cfg
    overrides, flags = changes_given(ctx)
    config = Path(resume) / "config.yaml"
    if not config.is_file():
        raise UserError(f"--resume {resume}: no config.yaml there (not an llmlab {kind} folder)")
    return replace(load_config(type(cfg), config, overrides, flags=flags), resume=resume)  # type: ignore[type-var]


def changes_given(ctx: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """(overrides, flags) given now with --resume, less the resume itself: what goes on top of the
    resumed folder's own config.yaml. A resumed run continues in its own folder, so --out is refused
    rather than silently ignored."""
    if getattr(ctx, "out", None) is not None:
        raise UserError(f"--out {ctx.out} with --resume: a resumed run continues in its own folder; drop --out")
    return (tuple(o for o in ctx.overrides if not o.startswith("resume=")),
            {k: v for k, v in ctx.flags.items() if k != "resume"})


def run_or_resume(folder: Path, cfg: Any, train: Callable[..., Path], *, log: Callable[[str], None],
                  quiet: bool, note: str = "") -> Path:
    """`train(cfg, out=folder)`, one stage of a multi-run command (the demo, the reward-hacking lab),
    logging `note` when it runs: a stage whose folder says "finished" is kept as it is; an interrupted one
    with a checkpoint continues from it (one without starts over). The stage's own status.json is written
    when it ends, not when the whole command does, so an interruption later leaves the stages before it
    "finished"."""
    if run_status(folder) == "finished":
        log(f"{folder.name}: finished before, kept")
        return folder
    if note:
        log(note)
    with outcome():
        if list_checkpoints(folder / "checkpoints"):
            return train(replace(cfg, resume=str(find_checkpoint(folder, log))), out=None, quiet=quiet)
        return train(cfg, out=folder, quiet=quiet)
