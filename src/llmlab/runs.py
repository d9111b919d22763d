"""Run folders: where every command that runs work leaves its config, metrics, log and outputs.

    runs/<command>-<timestamp>/
        config.yaml      the resolved config (defaults < YAML < overrides)
        metrics.jsonl    one JSON object per logged step
        log.txt          what the run said, with timestamps
        ...              the command's own outputs

Also the one place that decides whether a progress bar is shown: never with
`--quiet`, never when stderr is not a terminal (CI logs, pipes).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from llmlab.config import to_yaml
from llmlab.errors import UserError
from llmlab.files import write_text_atomic

T = TypeVar("T")


def default_run_dir(command: str, root: str | Path = "runs") -> Path:
    """`runs/<command>-<YYYYmmdd-HHMMSS>`, with a numeric suffix if that folder exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{command.replace(' ', '-')}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str | None = None,
             quiet: bool = False, unit: str = "it") -> Iterator[T]:
    """A tqdm bar on stderr, silent under `quiet` or when stderr is not a TTY."""
    from tqdm.auto import tqdm

    disable = quiet or not sys.stderr.isatty()
    yield from tqdm(iterable, total=total, desc=desc, disable=disable, unit=unit, dynamic_ncols=True, leave=False)


def progress_bar(*, total: int | None, desc: str, unit: str = "it", quiet: bool = False) -> Any:
    """A tqdm bar to update by hand (`bar.update(n)`), with the same silence rules as `progress`."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True,
                leave=False)


@dataclass
class Run:
    """An open run folder. Create it with `start_run`."""

    dir: Path
    quiet: bool = False

    def log(self, message: str) -> None:
        """Append to log.txt and echo to stderr unless quiet (above any progress bar, not through it)."""
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        with open(self.dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(line + "\n")
        if not self.quiet:
            from tqdm.auto import tqdm  # here: light commands never log through a run

            tqdm.write(message, file=sys.stderr)

    def metrics(self, step: int, **values: Any) -> None:
        """One JSON line per call; appended and flushed so a crash keeps what was logged. A NaN or
        infinite value is written as null: bare NaN is not JSON, and every reader must parse the file."""
        row = {"step": step, "time": round(time.time(), 3), **{k: json_safe(v) for k, v in values.items()}}
        with open(self.dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")

    def status(self, status: str, **details: Any) -> None:
        """status.json: how the run ended ("finished", "failed" with the error, "interrupted")."""
        write_text_atomic(self.dir / "status.json", json.dumps({"status": status, **details}, ensure_ascii=False) + "\n")

    def path(self, name: str) -> Path:
        p = self.dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def progress(self, iterable: Iterable[T], **kwargs: Any) -> Iterator[T]:
        return progress(iterable, quiet=self.quiet, **kwargs)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl (what `Run.metrics` wrote), in order; blank lines skipped."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats (at any depth of lists and dicts) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# What another run or a model leaves in its folder: a command writing there would mix its files with them.
RUN_MARKERS = ("config.yaml", "metrics.jsonl", "checkpoints", "model.yaml", "model.safetensors", "config.json",
               "tokenizer.json")
_STARTED: list[Run] = []  # runs started inside the innermost `outcome()`, in order


def occupied(folder: Path) -> list[str]:
    """What of another run or model `folder` holds (RUN_MARKERS present): writing there would mix."""
    return [name for name in RUN_MARKERS if (folder / name).exists()]


def start_run(command: str, cfg: Any, *, out: str | Path | None = None, quiet: bool = False,
              resume: bool = False) -> Run:
    """Create the run folder and write its resolved `config.yaml` (atomically). A folder that already
    holds a run or a model is refused (one line) unless this run resumes it, or it holds a run that
    never finished and left nothing to resume (no checkpoints/): that run's metrics are cleared and
    this one starts over there. Two runs never mix."""
    run_dir = Path(out) if out is not None else default_run_dir(command)
    if run_dir.is_file():
        raise UserError(f"--out {run_dir}: is a file, not a folder")
    found = occupied(run_dir)
    unfinished = run_status(run_dir) in ("running", "failed", "interrupted") and "checkpoints" not in found
    if found and not resume and not unfinished:
        raise UserError(f"--out {run_dir}: already holds a run or a model ({', '.join(found[:3])}); choose a new "
                        "folder" + (f", or --resume {run_dir} to continue it" if "checkpoints" in found else ""))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
    if found and not resume:  # an unfinished run's leftovers: its rows would read as this run's
        write_text_atomic(run_dir / "metrics.jsonl", "")
    (run_dir / "metrics.jsonl").touch()
    run = Run(dir=run_dir, quiet=quiet)
    run.status("running")
    _STARTED.append(run)
    return run


def run_status(run_dir: Path) -> str | None:
    """What a run folder's status.json says: "running", "finished", "failed", "interrupted"; None
    where there is none (or it is unreadable)."""
    path = run_dir / "status.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("status") if path.is_file() else None
    except ValueError:
        return None


@contextlib.contextmanager
def outcome() -> Iterator[None]:
    """Mark how every run started inside ended, in its status.json: "finished"; "failed", with the
    error also written to its log.txt; or "interrupted" (Ctrl-C). The CLI runs every command in one."""
    mark = len(_STARTED)
    try:
        yield
    except BaseException as e:
        interrupted = isinstance(e, KeyboardInterrupt)
        message = "interrupted" if interrupted else f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        for run in _STARTED[mark:]:
            run.log(f"run {'interrupted' if interrupted else 'failed'}: {message}")
            run.status("interrupted" if interrupted else "failed", error=message)
        raise
    else:
        for run in _STARTED[mark:]:
            run.status("finished")
    finally:
        del _STARTED[mark:]
