"""The frame every trainer runs in: processes, run folder, seed, tracker, resume, Ctrl-C.

    with open_session("sft", cfg, cfg.train, out=out, quiet=quiet) as s:
        s.info, s.device        rank / world size (torchrun) and the device of this process
        s.run_dir               the run folder, the same path on every rank
        s.log(message)          log.txt (rank 0 only)
        s.record(step, row)     metrics.jsonl + TensorBoard / W&B (rank 0 only)
        s.checkpoint(step, ...) RUN/checkpoints/step-N (rank 0 writes, the others wait)
        s.after_step(step, ...) a checkpoint when due (or at Ctrl-C, then the run stops)

`open_session`:
- initialises torch.distributed under torchrun (gloo on CPU, nccl on GPU) and shuts it down on
  the way out, even after an error;
- creates the run folder on rank 0 and writes the resolved config there, refusing a folder that
  holds another run unless resuming it (runs.outcome, around every command, marks in status.json
  how the run ended);
- when the config resumes a checkpoint (`cfg.resume`), uses the checkpoint's own run folder
  (unless `out` says otherwise) and drops the metric rows logged after that checkpoint: the
  resumed run logs them again, so metrics.jsonl reads as one uninterrupted run;
- seeds torch with `train.seed`; with `train.deterministic`, turns on PyTorch's deterministic
  kernels (on an H200 a resumed run logged the uninterrupted run's losses bit for bit only with
  them: benchmarks/results/trainers_gpu*.md);
- opens the tracker, and catches Ctrl-C, which the trainers answer by stopping after the current
  step with a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmlab.files import write_text_atomic
from llmlab.runs import Run, progress_bar, start_run
from llmlab.train import distributed as D
from llmlab.train.checkpoint import save_checkpoint
from llmlab.train.config import TrainConfig
from llmlab.train.step import due
from llmlab.train.trackers import Tracker, make_tracker


@dataclass
class Session:
    info: D.DistInfo
    device: torch.device
    run: Run | None  # rank 0 only
    run_dir: Path
    tracker: Tracker
    quiet: bool
    interrupted: bool = False  # set by the first Ctrl-C (SIGINT)

    def stop_requested(self) -> bool:
        """Whether Ctrl-C came, on any process (one all-reduce of a flag under torchrun, so every rank
        stops after the same step). The trainers ask after each step: they write a checkpoint, then stop."""
        if not self.info.enabled:
            return self.interrupted
        flag = torch.tensor(float(self.interrupted), device=self.device)
        return bool(D.sum_over_ranks(flag, self.info).item() > 0)

    def after_step(self, done: int, train: TrainConfig, write_checkpoint: Callable[[int], None]) -> bool:
        """The end of step `done`: `write_checkpoint(done)` when one is due or Ctrl-C came, then stop (as
        interrupted) if Ctrl-C came. Returns whether a checkpoint was written."""
        stop = self.stop_requested()
        written = stop or due(done, train.checkpoint_every, train.max_steps)
        if written:
            write_checkpoint(done)
        if stop:
            self.stop(done)
        return written

    def stop(self, done: int) -> None:
        """End the run after step `done`, whose checkpoint was just written: as a Ctrl-C, so that the
        command exits with 130 and the folder says "interrupted"."""
        self.log(f"interrupted after step {done}, checkpoint written; continue with --resume {self.run_dir}")
        raise KeyboardInterrupt

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    def log(self, message: str) -> None:
        if self.run is not None:
            self.run.log(message)

    def record(self, step: int, row: dict[str, Any]) -> None:
        """One metrics.jsonl row, and its numbers to the tracker."""
        if self.run is None:
            return
        self.run.metrics(step, **row)
        self.tracker.log(step, {k: v for k, v in row.items() if isinstance(v, (int, float))})

    def progress(self, *, total: int, desc: str, start: int = 0, unit: str = "step") -> Any:
        bar = progress_bar(total=total, desc=desc, unit=unit, quiet=self.quiet or not self.is_main)
        bar.update(start)
        return bar

    def barrier(self) -> None:
        D.barrier(self.info)

    def checkpoint(self, step: int, *, cfg: Any, write_model: Callable[[Path], None], optimizer_state: dict[str, Any],
                   counters: dict[str, Any], keep: int, trainable: dict[str, torch.Tensor] | None = None) -> None:
        """RUN/checkpoints/step-N (train/checkpoint.py), written by rank 0 while the others wait; it is
        good when no update was skipped since the last one."""
        good = counters.get("nan_skips", 0) == counters.get("nan_skips_at_checkpoint", 0)
        counters["nan_skips_at_checkpoint"] = counters.get("nan_skips", 0)
        if self.is_main:
            save_checkpoint(self.run_dir / "checkpoints", step, write_model=write_model,
                            optimizer_state=optimizer_state, cfg=cfg, counters=dict(counters), keep=keep,
                            trainable=trainable, good=good)
        self.barrier()


@contextlib.contextmanager
def open_session(command: str, cfg: Any, train: TrainConfig, *, out: Path | None, quiet: bool,
                 resume_step: int | None = None) -> Iterator[Session]:
    """A Session for `command` configured by `cfg` (written to config.yaml) with loop settings `train`.
    `resume_step` is the step of the checkpoint `cfg.resume` points at (None for a fresh run)."""
    info, device = D.init_distributed(train.device)
    tracker: Tracker = Tracker()
    try:
        run_dir = Path(out) if out is not None else None
        if resume_step is not None and run_dir is None:
            run_dir = Path(cfg.resume).parent.parent  # RUN/checkpoints/step-N -> RUN
        run = None
        if info.is_main:
            run = start_run(command, cfg, out=run_dir, quiet=quiet, resume=resume_step is not None)
            run_dir = run.dir
            if resume_step is not None:
                for name in ("metrics.jsonl", "samples.jsonl"):
                    truncate_metrics(run.dir / name, resume_step)
        run_dir = Path(D.broadcast_text(str(run_dir), info))
        if info.is_main:
            tracker = make_tracker(train.tracker, run_dir, cfg, train.wandb_project)
        torch.manual_seed(train.seed)
        if train.deterministic:  # CUDA's atomics-based kernels otherwise differ between two identical runs
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        session = Session(info, device, run, run_dir, tracker, quiet)
        previous = _catch_ctrl_c(session)
        try:
            yield session
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
    finally:
        tracker.close()
        D.shutdown(info)


def _catch_ctrl_c(session: Session) -> Any:
    """The first Ctrl-C asks the loop to stop after the current step (with a checkpoint); a second one
    stops at once. Returns the handler it replaced (None off the main thread, where none can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handle(signum: int, frame: Any) -> None:
        if session.interrupted:
            raise KeyboardInterrupt
        session.interrupted = True
        print("\nstopping after this step, with a checkpoint (Ctrl-C again to stop at once)", file=sys.stderr)

    return signal.signal(signal.SIGINT, handle)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop rows (metrics, samples) logged after `step` (those of a killed run past its last checkpoint)."""
    if not path.is_file():
        return

    kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and json.loads(line).get("step", 0) <= step]
    write_text_atomic(path, "".join(kept))
