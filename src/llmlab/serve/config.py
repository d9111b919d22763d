"""The configs of `llmlab serve` and `llmlab review serve` (imports nothing heavy: `--print-config` and `--help` stay fast)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from llmlab.config import check, require


@dataclass(frozen=True)
class ServeConfig:
    """`llmlab serve`: an OpenAI-compatible HTTP server for one model."""

    model: str = ""  # an llmlab model folder or a local HF model folder
    name: str = ""  # the model id clients send ("model": ...); default: the folder's name
    host: str = "127.0.0.1"  # local only by default; 0.0.0.0 exposes the server to the network
    port: int = 8000  # 0: any free port (the one chosen is printed)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_batch: int = 16  # requests the engine advances together; more wait in its queue
    block_size: int = 16  # tokens per KV-cache block of the engine
    num_blocks: int | None = None  # KV-cache blocks; None: the engine's default
    log_requests: bool = False  # uvicorn's access log on stderr

    def __post_init__(self) -> None:
        require(bool(self.model), "model is required (--model DIR: an llmlab model folder or a local HF folder)")
        check(0 <= self.port <= 65535, f"port must be in [0, 65535], got {self.port}")
        check(bool(self.host), "host must not be empty")
        check(self.max_batch >= 1, f"max_batch must be at least 1, got {self.max_batch}")
        check(self.block_size >= 1, f"block_size must be at least 1, got {self.block_size}")
        check(self.num_blocks is None or self.num_blocks >= 1, f"num_blocks must be at least 1, got {self.num_blocks}")


@dataclass(frozen=True)
class ReviewConfig:
    """`llmlab review serve`: a web page on which a person labels pairs of responses."""

    pairs: str = ""  # JSONL of {prompt, a, b} or {prompt, chosen, rejected} rows
    out: str = ""  # the usable preferences (JSONL); every decision goes to its sibling NAME.labels.jsonl
    compare: tuple[str, ...] = ()  # NAME=LABELS.jsonl: AI judges' labels to compare with on /agreement
    seed: int = 0  # draws which response of each pair is shown on the left
    host: str = "127.0.0.1"  # local only by default; the page has no authentication
    port: int = 8001  # 0: any free port (the one chosen is printed)

    def __post_init__(self) -> None:
        require(bool(self.pairs), "pairs is required (--pairs FILE: {prompt, a, b} or {prompt, chosen, rejected})")
        require(bool(self.out), "out is required (--out prefs.jsonl: where the preferences go)")
        check(not self.out or os.path.abspath(self.out) != os.path.abspath(self.pairs), "out must not be the pairs file")
        check(0 <= self.port <= 65535, f"port must be in [0, 65535], got {self.port}")
        check(bool(self.host), "host must not be empty")
