"""Configs of training runs: the loop every trainer shares (`TrainConfig`), pretraining's additions to
it (`PretrainTrainConfig`), the pretraining data, and `PretrainConfig`.

A trainer's config holds only keys that trainer uses: `train.seq_len` or `train.fsdp` given to
`llmlab sft` is an unknown-key error, not a silently ignored one. `llmlab pretrain --print-config`
shows every field; `model.*` is the ModelConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llmlab.config import check
from llmlab.model.config import ModelConfig


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation loop, shared by every trainer (train/session.py, batches.py, step.py)."""

    max_steps: int = 1000
    batch_size: int = 16  # sequences per optimiser step, over all processes (the global batch)
    micro_batch_size: int = 0  # sequences per forward on one process; 0: the whole per-process batch
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on weight matrices only, never on norms, biases or embeddings
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global grad norm; 0: no clipping
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    eval_every: int = 100
    eval_batches: int = 8
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    on_nan: Literal["stop", "skip"] = "stop"
    max_nan_skips: int = 10  # on_nan=skip: stop as `stop` does once more updates than this were skipped
    deterministic: bool = False  # torch.use_deterministic_algorithms: bit-exact resume on GPU (CPU runs are already)
    tracker: Literal["none", "tensorboard", "wandb"] = "none"  # metrics.jsonl is always written
    wandb_project: str = "llmlab"

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "eval_batches", "log_every", "keep_checkpoints"):
            check(getattr(self, name) >= 1, f"train.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("micro_batch_size", "warmup_steps", "eval_every", "checkpoint_every", "grad_clip",
                     "weight_decay", "max_nan_skips"):
            check(getattr(self, name) >= 0, f"train.{name} must be >= 0, got {getattr(self, name)}")
        check(self.lr > 0, f"train.lr must be positive, got {self.lr}")
        check(0.0 <= self.min_lr_ratio <= 1.0, f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        check(0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0, "train.beta1 and train.beta2 must be in [0, 1)")
        check(self.micro_batch_size == 0 or self.batch_size % self.micro_batch_size == 0,
              f"train.micro_batch_size ({self.micro_batch_size}) must divide train.batch_size ({self.batch_size})")


@dataclass(frozen=True)
class PretrainTrainConfig(TrainConfig):
    """`llmlab pretrain`'s loop: the shared one plus fixed-length sequences, FSDP, compile and samples."""

    seq_len: int = 256
    compile: bool = False  # torch.compile the model
    fsdp: bool = False  # shard parameters with FSDP (fully_shard) under torchrun instead of DDP
    sample_every: int = 0  # 0: at every eval
    sample_tokens: int = 48

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.seq_len >= 1, f"train.seq_len must be at least 1, got {self.seq_len}")
        check(self.sample_every >= 0 and self.sample_tokens >= 0, "train.sample_every and train.sample_tokens "
              "must be >= 0")


@dataclass(frozen=True)
class PretrainDataConfig:
    input: tuple[str, ...] = ()  # text files, or JSONL / JSON / parquet / HF save_to_disk with a "text" field; empty: built-in
    corpus_chars: int = 3_000_000  # size of the built-in task-world corpus when no input is given
    tokenizer: str = ""  # a folder with tokenizer.json; empty: train a BPE of model.vocab_size (or 4096) on the data
    val_fraction: float = 0.02  # share of documents held out (chosen by a hash of the text)
    cache_dir: str = ".cache/llmlab/tokens"  # tokenized data, reused when tokenizer and input are unchanged

    def __post_init__(self) -> None:
        check(0.0 < self.val_fraction < 0.5, f"data.val_fraction must be in (0, 0.5), got {self.val_fraction}")
        check(self.corpus_chars >= 10_000, f"data.corpus_chars must be at least 10000, got {self.corpus_chars}")


@dataclass(frozen=True)
class PretrainConfig:
    """`llmlab pretrain`."""

    # vocab_size 0: the ids of data.tokenizer, rounded up to a multiple of 64; 4096 for a BPE trained on the data
    model: ModelConfig = field(default_factory=lambda: ModelConfig(vocab_size=0, d_model=256, n_layers=4,
                                                                   n_heads=8, max_seq_len=256))
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    resume: str = ""  # a run folder or checkpoint folder to continue from
    # a model folder whose weights start the run instead of random ones (continued pretraining, the
    # uptraining of a converted model); its shapes must be model.*'s
    init: str = ""

    def __post_init__(self) -> None:
        check(not (self.init and self.resume), "init and resume exclude each other: a resumed run has its weights")
        check(self.train.seq_len <= self.model.max_seq_len,
              f"train.seq_len ({self.train.seq_len}) is longer than model.max_seq_len ({self.model.max_seq_len})")
