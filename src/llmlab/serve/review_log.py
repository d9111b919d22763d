"""The label store of `llmlab review serve`: the pairs to label, and what a person said about them, kept
so that a killed server loses nothing it confirmed and a restart carries on at the first unlabelled pair.

Input (`--pairs F`), one JSON object per line, either form:

    {"prompt", "a", "b"}               two responses, no preference known
    {"prompt", "chosen", "rejected"}   a preference pair; stored as a = chosen, b = rejected, so the
                                       human label "a" agrees with the file (the agreement page says how often)

Two files are written next to each other for `--out prefs.jsonl`:

    prefs.labels.jsonl   every standing decision, in the order it was made: labels "a", "b", "tie" and
                         "skip". Written by appending one complete line with a single write and an fsync
                         before the browser is told it is saved (a torn last line, which no browser was
                         ever told of, is cut off at the next start). Undo rewrites it without its last
                         line (temp + rename, llmlab.files; then the folder is fsync'd), so every line in it is a label that stands:
                         readers never replay undo records. This is the file a restart reads.
    prefs.jsonl          the usable preferences: the rows of the labels file whose label is "a" or "b",
                         rewritten (temp + rename) after every label and undo and at every start. Ties
                         and skips are not preferences, so `llmlab dpo` and `llmlab rm train` read it as is.

One row (both files):

    {"prompt": str, "a": str, "b": str,
     "label": "a" | "b" | "tie" | "skip",   which response the person judged better ("skip": no judgement)
     "source": "human",
     "p_a": 1 | 0 | 0.5 | null,             P(a is better), as in llmlab.align.feedback.judges.Verdict (null: skip)
     "pair": int,                           0-based index of the pair among the non-blank lines of the pairs file
     "shown": "ab" | "ba",                  which response was on the left ("ab": a)
     "time": "2026-12-06T06:30:00Z",        when it was labelled (UTC)
     "chosen": str, "rejected": str}        the preferred and the other response: only for "a" and "b"

A feedback combiner reads the labels file and drops "skip" rows; a trainer reads prefs.jsonl.
The left/right order of each pair is drawn from (seed, pair index), so it is the same after a restart and
recorded in `shown`. A lock file (`.prefs.jsonl.lock`) keeps a second server off the same output.
Left out: several annotators on one output (give each their own --out) and pairs with chat-message prompts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlab.data.loaders import iter_jsonl
from llmlab.errors import DataError, UserError
from llmlab.files import atomic_open, write_jsonl_atomic

LABELS: tuple[str, ...] = ("a", "b", "tie", "skip")
P_A: dict[str, float | None] = {"a": 1, "b": 0, "tie": 0.5, "skip": None}


@dataclass(frozen=True)
class Pair:
    prompt: str
    a: str
    b: str
    given: bool = False  # read from {"chosen", "rejected"}: a is the file's chosen response


def _problem(row: Any) -> str | None:
    """What is wrong with one pairs-file row, or None."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    keys = ("a", "b") if "a" in row or "b" in row else ("chosen", "rejected")
    for key in ("prompt", *keys):
        if key not in row:
            return f"missing key {key!r} (a pair is {{prompt, a, b}} or {{prompt, chosen, rejected}})"
        if not isinstance(row[key], str):
            return f"{key!r} must be a string, got {type(row[key]).__name__}"
        if not row[key].strip():
            return f"{key!r} is empty"
    return None


def load_pairs(path: str | os.PathLike[str]) -> list[Pair]:
    """Every pair of a JSONL file; the first bad line is a DataError naming file:line (nothing is half used)."""
    pairs = []
    for lineno, row in iter_jsonl(path):
        problem = _problem(row)
        if problem is not None:
            raise DataError(f"{path}:{lineno}: {problem}")
        if "a" in row:
            pairs.append(Pair(row["prompt"], row["a"], row["b"]))
        else:
            pairs.append(Pair(row["prompt"], row["chosen"], row["rejected"], given=True))
    if not pairs:
        raise DataError(f"{path}: no pairs")
    return pairs


def shown_order(seed: int, index: int) -> str:
    """"ab" (a on the left) or "ba": a fair coin per pair, the same for the same seed and pair index."""
    return random.Random(f"review:{seed}:{index}").choice(("ab", "ba"))


def label_row(pair: Pair, index: int, label: str, *, shown: str, when: float) -> dict[str, Any]:
    """The stored row of one decision (the schema in the module docstring)."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    row: dict[str, Any] = {"prompt": pair.prompt, "a": pair.a, "b": pair.b, "label": label, "source": "human",
                           "p_a": P_A[label], "pair": index, "shown": shown,
                           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))}
    if label in ("a", "b"):
        row["chosen"], row["rejected"] = (pair.a, pair.b) if label == "a" else (pair.b, pair.a)
    return row


def labels_path(out: str | os.PathLike[str]) -> Path:
    """prefs.jsonl -> prefs.labels.jsonl (any other name: NAME.labels.jsonl)."""
    out = Path(out)
    return out.with_name(f"{out.name.removesuffix('.jsonl')}.labels.jsonl")


def _fsync_dir(folder: Path) -> None:
    """Make a file's creation or rename in `folder` durable too (the file's own fsync covers its bytes only)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_line(path: Path, line: str) -> None:
    """Append one complete line durably: one write, then fsync. A failed write is cut back off, so the
    next line never lands glued to half of this one."""
    data = line.encode("utf-8")
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            written = 0
            while written < len(data):  # a regular file writes it all at once unless the disk is full
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)


def _read_labels(path: Path, pairs: list[Pair]) -> list[dict[str, Any]]:
    """The standing rows of a labels file, checked against `pairs`; a torn last line (no newline: the
    write that made it was never confirmed) is cut off."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        index = row.get("pair") if isinstance(row, dict) else None
        if not isinstance(index, int) or not 0 <= index < len(pairs) or row.get("label") not in LABELS:
            raise DataError(f"{where}: not a label row of this review (pair index and label expected)")
        pair = pairs[index]
        if (row.get("prompt"), row.get("a"), row.get("b")) != (pair.prompt, pair.a, pair.b):
            raise DataError(f"{where}: pair {index} differs from the pairs file (labels of other pairs?); "
                            "use another --out")
        if index in seen:
            raise DataError(f"{where}: pair {index} is labelled twice")
        seen.add(index)
        rows.append(row)
    return rows


class LabelLog:
    """The labels of one review session: thread-safe, durable before each call returns."""

    def __init__(self, out: str | os.PathLike[str], pairs: list[Pair], *, seed: int = 0) -> None:
        self.out, self.labels, self.pairs, self.seed = Path(out), labels_path(out), pairs, seed
        self._lock = threading.Lock()
        self._lock_file = self._take_lock()  # before reading: the tail cut below must not race a live server
        try:
            if self.labels.exists():
                self.rows = _read_labels(self.labels, pairs)
                self._write_prefs()  # a kill between the labels append and this rewrite left it one behind
            elif self.out.exists():  # never overwrite a file this review did not write
                raise UserError(f"{self.out} exists but {self.labels} does not: it is not the output of a "
                                "review; choose another --out")
            else:
                self.rows = []
        except BaseException:
            self.close()
            raise

    def _take_lock(self) -> Any:
        """An exclusive lock on a sibling file: a second server on the same output is an error, and the
        kernel frees the lock however this process ends (SIGKILL too)."""
        path = self.out.with_name(f".{self.out.name}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 (held for the life of the server)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UserError(f"{self.out}: another review server is writing it") from None
        return handle

    def close(self) -> None:
        self._lock_file.close()

    @property
    def total(self) -> int:
        return len(self.pairs)

    def current(self) -> int | None:
        """The first pair with no standing decision (None: all done)."""
        done = {row["pair"] for row in self.rows}
        return next((i for i in range(len(self.pairs)) if i not in done), None)

    def shown(self, index: int) -> str:
        return shown_order(self.seed, index)

    def add(self, index: int, label: str, *, when: float | None = None) -> dict[str, Any]:
        """Record the decision on pair `index`, which must be the current pair (a stale browser tab or a
        double click is refused, not recorded twice)."""
        with self._lock:
            if index != self.current():
                raise UserError(f"pair {index} is not the current pair ({self.current()})")
            row = label_row(self.pairs[index], index, label, shown=self.shown(index),
                            when=time.time() if when is None else when)
            _append_line(self.labels, json.dumps(row, ensure_ascii=False) + "\n")
            self.rows.append(row)
            self._write_prefs()
            return row

    def undo(self) -> dict[str, Any]:
        """Take back the latest decision (its pair becomes the current one); durable like a label."""
        with self._lock:
            if not self.rows:
                raise UserError("nothing to undo")
            with atomic_open(self.labels) as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in self.rows[:-1])
            _fsync_dir(self.labels.parent)  # the rename itself must survive a crash, or the label comes back
            row = self.rows.pop()
            self._write_prefs()
            return row

    def _write_prefs(self) -> None:
        write_jsonl_atomic(self.out, (row for row in self.rows if row["label"] in ("a", "b")))
