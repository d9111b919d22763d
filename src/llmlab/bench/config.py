"""Configs of the bench commands: `llmlab bench attention`, `llmlab bench inference`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llmlab.config import check, require


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


@dataclass(frozen=True)
class ToleranceConfig:
    """The quality gate of `llmlab bench inference`: how far a backend may move from the original model."""

    naive: float = 1e-3  # max |logit difference| on the held-out text, per backend
    sdpa: float = 1e-3
    flash: float = 1e-3
    triton: float = 5e-2  # a GPU kernel that may use TF32 matmuls
    perplexity: float = 1e-3  # |held-out perplexity delta| / the original's perplexity
    agreement: float = 0.9  # least share of greedy tokens identical to the original's

    def __post_init__(self) -> None:
        for name in ("naive", "sdpa", "flash", "triton", "perplexity"):
            check(getattr(self, name) >= 0, f"tolerance.{name} must be >= 0, got {getattr(self, name)}")
        check(0.0 <= self.agreement <= 1.0, f"tolerance.agreement must be in [0, 1], got {self.agreement}")


@dataclass(frozen=True)
class BenchInferenceConfig:
    """`llmlab bench inference`."""

    model: str = ""  # an llmlab or HF model folder
    attention: tuple[Literal["naive", "sdpa", "flash", "triton"], ...] = ("naive", "sdpa", "flash", "triton")
    text: str = ""  # a held-out text file; default: task-world documents (random ids: a model without tokenizer)
    eval_tokens: int = 1024  # held-out tokens for logits and perplexity, in windows of seq_len
    seq_len: int = 128
    prompt_len: int = 32  # decode: prompts cut from the held-out tokens
    new_tokens: int = 32
    batches: tuple[int, ...] = (1, 8)
    repeats: int = 3  # timed generate calls per backend and batch; medians and percentiles over them
    decode: Literal["static", "forward"] = "static"  # the Engine's decode step (model/decode.py)
    threads: int = 0  # torch threads; 0: torch's default
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    tolerance: ToleranceConfig = field(default_factory=ToleranceConfig)

    def __post_init__(self) -> None:
        require(bool(self.model), "model is required: --model DIR (an llmlab or HF model folder)")
        check(len(self.attention) > 0, "attention is empty: name at least one backend")
        check(len(set(self.attention)) == len(self.attention), f"a backend is given twice: {self.attention}")
        for name in ("eval_tokens", "seq_len", "prompt_len", "new_tokens", "repeats"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        check(len(self.batches) > 0 and all(b >= 1 for b in self.batches),
              f"batches must be positive sizes, got {self.batches}")
        check(self.threads >= 0, f"threads must be >= 0 (0: torch's default), got {self.threads}")
