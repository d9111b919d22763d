"""Configs of the bench commands: `llmlab bench attention`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmlab.config import check


@dataclass(frozen=True)
class BenchAttentionConfig:
    """`llmlab bench attention`."""

    min_len: int = 256  # prefill lengths: min_len, 2 min_len, ... up to max_len
    max_len: int = 4096
    batch: int = 1
    heads: int = 8  # query heads; the MHA rows have as many key/value heads
    kv_heads: int = 2  # key/value heads of the GQA rows (= heads: MHA rows only)
    head_dim: int = 64
    backends: tuple[Literal["naive", "sdpa", "flash"], ...] = ("naive", "sdpa", "flash")
    repeats: int = 3  # timed runs per case after the first (memory) run; 1 when that took > 2 s
    decode_calls: int = 31  # decode: median of this many calls
    check_max_len: int = 8192  # outputs checked against naive at every T up to this
    check_grads_max_len: int = 1024  # gradients too, up to this T
    q_block: int = 256  # flash's tiles
    k_block: int = 256
    matmul_n: int = 2048  # the matmul peak: torch.mm of n x n
    threads: int = 0  # torch threads; 0: torch's default (one per core)
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.min_len >= 1, f"min_len must be at least 1, got {self.min_len}")
        check(self.max_len >= self.min_len, f"max_len ({self.max_len}) is below min_len ({self.min_len})")
        for name in ("batch", "heads", "kv_heads", "head_dim", "repeats", "decode_calls", "q_block", "k_block",
                     "matmul_n"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        check(self.heads % self.kv_heads == 0, f"heads ({self.heads}) must be a multiple of kv_heads "
              f"({self.kv_heads})")
        check(self.threads >= 0, f"threads must be >= 0 (0: torch's default), got {self.threads}")
        check(len(self.backends) > 0, "backends is empty")
        check(len(set(self.backends)) == len(self.backends), f"a backend is given twice: {self.backends}")
