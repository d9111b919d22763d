"""Configs of the inference commands: `llmlab profile` and `llmlab convert gqa`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llmlab.config import check, require
from llmlab.train.config import PretrainDataConfig, PretrainTrainConfig


@dataclass(frozen=True)
class ProfileConfig:
    """`llmlab profile`: where the time of one prefill and N decode steps goes, by model part and by op."""

    model: str = ""  # an llmlab model folder or a local HF Llama / Mistral / Qwen2 folder
    batch: int = 4  # prompts decoded together
    prompt_len: int = 64  # tokens per prompt (seeded random ids: the cost does not depend on which)
    new_tokens: int = 32  # tokens per prompt: the first from the prefill, the rest from decode steps
    temperature: float = 1.0  # 0: greedy; >0 profiles the sampler as used by `generate`
    top_k: int | None = None
    top_p: float | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    top_ops: int = 15  # rows of the top-ops table
    seed: int = 0

    def __post_init__(self) -> None:
        require(bool(self.model), "model is required (--model DIR: an llmlab model folder or a local HF folder)")
        for name in ("batch", "prompt_len", "top_ops"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        check(self.new_tokens >= 2, f"new_tokens must be at least 2 (the first comes from the prefill, the others "
              f"from decode steps), got {self.new_tokens}")
        check(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
        check(self.top_k is None or self.top_k >= 1, f"top_k must be at least 1, got {self.top_k}")
        check(self.top_p is None or 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")



@dataclass(frozen=True)
class GQAEvalConfig:
    """What `llmlab convert gqa` measures on the original and the converted models, and its gate."""

    batches: int = 8  # held-out batches of train.batch_size x train.seq_len tokens for the loss
    prompts: int = 16  # held-out prompts whose greedy continuations are compared with the original's
    prompt_tokens: int = 16
    new_tokens: int = 32
    speed_batches: tuple[int, ...] = (1, 8)  # decode tokens/s with the Engine at these batch sizes
    speed_tokens: int = 64  # new tokens per timed generation
    repeats: int = 3  # timed generations per batch size after a warm-up one; the median is kept
    # the gate (None: not asked): the command fails, after writing its table, when the final model's
    # perplexity is more than max_ppl_ratio x the original's, or its greedy (top-1) agreement with the
    # original is below min_agreement (min_top1_agreement)
    max_ppl_ratio: float | None = None
    min_agreement: float | None = None
    min_top1_agreement: float | None = None

    def __post_init__(self) -> None:
        for name in ("batches", "prompts", "prompt_tokens", "new_tokens", "speed_tokens", "repeats"):
            check(getattr(self, name) >= 1, f"eval.{name} must be at least 1, got {getattr(self, name)}")
        check(len(self.speed_batches) > 0 and min(self.speed_batches) >= 1,
              f"eval.speed_batches must be batch sizes of at least 1, got {self.speed_batches}")
        check(self.max_ppl_ratio is None or self.max_ppl_ratio >= 1.0,
              f"eval.max_ppl_ratio must be at least 1 (a perplexity ratio), got {self.max_ppl_ratio}")
        for name in ("min_agreement", "min_top1_agreement"):
            value = getattr(self, name)
            check(value is None or 0.0 <= value <= 1.0, f"eval.{name} must be in [0, 1], got {value}")

    @property
    def gated(self) -> bool:
        return any(v is not None for v in (self.max_ppl_ratio, self.min_agreement, self.min_top1_agreement))


@dataclass(frozen=True)
class GQAConvertConfig:
    """`llmlab convert gqa`: pool a model's key/value heads into n_kv_heads groups (inference/gqa.py),
    uptrain it (`llmlab pretrain` with init=), and measure it against the original.

    Uptraining runs `uptrain_steps` steps, by default uptrain_fraction x the pretraining run's
    train.max_steps. When --model is an `llmlab pretrain` run folder, uptraining repeats that run's
    train.* and data.* (warmup scaled as the steps are), with the train.* and data.* keys given now
    on top; for any other model folder, the train.* and data.* here apply. train.max_steps is never
    read: the steps are uptrain_steps'. The data is tokenized with the model's own tokenizer.
    """

    model: str = ""
    n_kv_heads: int = 0
    method: Literal["mean", "first"] = "mean"  # mean-pool each group's heads (the paper), or keep its first
    uptrain_fraction: float = 0.05  # the paper's 5% of the pretraining steps
    uptrain_steps: int | None = None  # None: uptrain_fraction x the pretraining run's steps; 0: none
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    eval: GQAEvalConfig = field(default_factory=GQAEvalConfig)
    threads: int = 0  # torch threads for the whole command; 0: torch's default (one per core)

    def __post_init__(self) -> None:
        require(bool(self.model), "model is required (--model DIR: an llmlab model folder or pretrain run)")
        require(self.n_kv_heads != 0, "n_kv_heads is required (--kv-heads G: key/value heads after conversion)")
        check(self.n_kv_heads >= 0, f"n_kv_heads must be at least 1, got {self.n_kv_heads}")  # 0: not given
        check(0.0 <= self.uptrain_fraction <= 1.0, f"uptrain_fraction must be in [0, 1], got {self.uptrain_fraction}")
        check(self.uptrain_steps is None or self.uptrain_steps >= 0,
              f"uptrain_steps must be >= 0, got {self.uptrain_steps}")
        check(self.threads >= 0, f"threads must be >= 0 (0: torch's default), got {self.threads}")
        check(not self.data.tokenizer, "data.tokenizer cannot be set: the model's own tokenizer is used")
