"""Configs of the offline preference trainers: `llmlab dpo` (`DPOConfig`) and `llmlab eval-prefs`.

`llmlab dpo --print-config` shows every field. `train.*` is the shared loop (train.config.TrainConfig);
its `seq_len` is not used here: `max_length` / `max_prompt_length` bound each pair instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llmlab.align.models import LoraConfig
from llmlab.config import check
from llmlab.train.config import TrainConfig

LossName = Literal["sigmoid", "hinge", "ipo", "cdpo", "robust", "simpo", "orpo", "kto"]


@dataclass(frozen=True)
class PrefDataConfig:
    input: tuple[str, ...] = ()  # JSONL / JSON / parquet / HF dataset folders of {prompt, chosen, rejected}; empty: task world
    n: int = 2000  # task-world pairs to draw when no input is given
    seed: int = 0
    strict: bool = True  # false: skip malformed rows (listed in log.txt) instead of stopping at the first
    eval_fraction: float = 0.05  # with input: share of rows held out for the evaluation (task world: its eval split)

    def __post_init__(self) -> None:
        check(self.n >= 1, f"data.n must be at least 1, got {self.n}")
        check(0.0 <= self.eval_fraction < 0.5, f"data.eval_fraction must be in [0, 0.5), got {self.eval_fraction}")


@dataclass(frozen=True)
class PrefEvalConfig:
    """The evaluation at the end of a run (and of `llmlab eval-prefs`)."""

    n_pairs: int = 200  # held-out preference pairs scored by implicit reward
    n_prompts: int = 180  # held-out task-world prompts answered greedily by the base and the aligned model
    max_new_tokens: int = 64
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_pairs", "n_prompts", "max_new_tokens", "batch_size"):
            check(getattr(self, name) >= 0 if name.startswith("n_") else getattr(self, name) >= 1,
                  f"eval.{name} must be {'>= 0' if name.startswith('n_') else 'at least 1'}, got {getattr(self, name)}")


def _dpo_train() -> TrainConfig:
    return TrainConfig(max_steps=200, batch_size=8, lr=5e-5, warmup_steps=10, weight_decay=0.0, min_lr_ratio=0.0,
                       eval_every=0, log_every=1, checkpoint_every=100, sample_tokens=0)


@dataclass(frozen=True)
class DPOConfig:
    """`llmlab dpo`: preference optimisation of a policy against a frozen reference."""

    model: str = ""  # the policy to start from: an llmlab model folder or a local HF causal-LM folder
    reference_model: str = ""  # empty: the starting policy itself (the usual choice)
    loss: LossName = "sigmoid"  # one of align.dpo.LOSSES
    beta: float = 0.1  # DPO's KL strength; SimPO's reward scale; ORPO's weight of the odds-ratio term (lambda)
    label_smoothing: float = 0.0  # cdpo / robust: assumed share of flipped labels
    simpo_gamma: float = 0.5  # simpo: target margin (the paper's gamma, in reward units)
    orpo_sft_weight: float = 1.0  # orpo: weight of the chosen responses' NLL (the paper fixes it at 1)
    rpo_alpha: float = 0.0  # other losses: weight of the chosen responses' NLL added to the loss (RPO; TRL's "sft" term)
    kto_desirable_weight: float = 1.0
    kto_undesirable_weight: float = 1.0
    reference: Literal["copy", "precompute"] = "copy"  # precompute: one pass before training, then only the policy in memory
    max_length: int = 512  # prompt + response tokens per sequence
    max_prompt_length: int = 256  # longer prompts keep their end
    gradient_checkpointing: bool = False
    warn_margin: float = 20.0  # log a warning once the mean reward margin passes this (DPO's margin runs away)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: PrefDataConfig = field(default_factory=PrefDataConfig)
    train: TrainConfig = field(default_factory=_dpo_train)
    eval: PrefEvalConfig = field(default_factory=PrefEvalConfig)
    resume: str = ""  # a run folder or checkpoint folder to continue from

    def __post_init__(self) -> None:
        check(bool(self.model) or bool(self.resume), "model is required: --model DIR (an llmlab or HF model folder)")
        check(self.beta > 0, f"beta must be positive, got {self.beta}")
        check(0.0 <= self.label_smoothing < 0.5, f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        check(self.label_smoothing == 0.0 or self.loss in ("cdpo", "robust"),
              f"label_smoothing applies to the cdpo and robust losses, not to {self.loss}")
        check(1 <= self.max_prompt_length < self.max_length,
              f"need 1 <= max_prompt_length ({self.max_prompt_length}) < max_length ({self.max_length})")
        check(self.orpo_sft_weight >= 0, f"orpo_sft_weight must be >= 0, got {self.orpo_sft_weight}")
        check(self.rpo_alpha >= 0, f"rpo_alpha must be >= 0, got {self.rpo_alpha}")
        check(self.rpo_alpha == 0.0 or self.loss != "orpo", "orpo has its own NLL term: set orpo_sft_weight, not rpo_alpha")
        check(self.warn_margin > 0, f"warn_margin must be positive, got {self.warn_margin}")
        check(self.kto_desirable_weight > 0 and self.kto_undesirable_weight > 0, "kto weights must be positive")


@dataclass(frozen=True)
class EvalPrefsConfig:
    """`llmlab eval-prefs`: held-out preference accuracy and base-vs-aligned task scores."""

    model: str = ""  # the aligned policy (a dpo run folder or any model folder)
    base: str = ""  # the reference / starting model; empty: the `model` of the dpo run that wrote --model
    data: PrefDataConfig = field(default_factory=lambda: PrefDataConfig(eval_fraction=0.0))
    eval: PrefEvalConfig = field(default_factory=PrefEvalConfig)
    max_length: int = 512
    max_prompt_length: int = 256
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        check(bool(self.model), "model is required: --model DIR")
        check(1 <= self.max_prompt_length < self.max_length,
              f"need 1 <= max_prompt_length ({self.max_prompt_length}) < max_length ({self.max_length})")
