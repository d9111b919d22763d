"""Configs of `llmlab feedback label` and `llmlab feedback combine` (no heavy imports: `--help` stays fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmlab.config import check, require


@dataclass(frozen=True)
class FeedbackLabelConfig:
    """`llmlab feedback label`: one judge's labels of pairs, appended to a labels file (resumable)."""

    pairs: str = ""  # JSONL of {prompt, a, b} or {prompt, chosen, rejected} rows
    judge: str = ""  # a judge spec: gold | rm=DIR | safety[=RULES.yaml] | endpoint=URL[,key=value...]
    out: str = ""  # the labels file (JSONL); pairs it already holds are skipped
    batch_size: int = 16  # pairs per judge call; the file is rewritten (atomically) after each batch

    def __post_init__(self) -> None:
        require(bool(self.pairs), "pairs is required: --pairs PAIRS.jsonl")
        require(bool(self.judge), "judge is required: --judge SPEC (gold, rm=DIR, safety, endpoint=URL,...)")
        require(bool(self.out), "out is required: --out LABELS.jsonl")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class FeedbackCombineConfig:
    """`llmlab feedback combine`: several sources' labels of the same pairs into soft preferences, with
    their agreement (with each other and with gold) and their disagreements."""

    labels: str = ""  # NAME=FILE,NAME=FILE,... (a bare FILE is named by its stem)
    method: Literal["weighted", "majority", "bt"] = "weighted"
    weights: str = ""  # weighted: NAME=W,... (default 1 each)
    gold: bool = False  # also compare every source with the task world's gold labels (task-world prompts only)
    out: str = ""  # the output folder
    n_boot: int = 1000  # bootstrap resamples per interval
    seed: int = 0  # of the bootstrap

    def __post_init__(self) -> None:
        require(bool(self.labels), "labels is required: --labels NAME=FILE,NAME=FILE")
        require(bool(self.out), "out is required: --out DIR")
        check(self.n_boot >= 10, f"n_boot must be >= 10, got {self.n_boot}")
        check(not self.weights or self.method == "weighted", "weights apply to method=weighted only")
