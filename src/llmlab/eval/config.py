"""Configs of the eval commands (frozen dataclasses of primitives; no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llmlab.config import check, require
from llmlab.data.config import TaskConfig
from llmlab.errors import ConfigError


@dataclass(frozen=True)
class EvalConfig:
    """`llmlab eval`: several models on the same held-out prompts and text, every figure with a bootstrap
    interval, and each model's paired difference from the first."""

    models: str = ""  # NAME=DIR,NAME=DIR,...: llmlab or local HF model folders; the first is the baseline
    prompts: tuple[str, ...] = ()  # {"prompt"} or chat {"messages"} JSONL files; empty: task-world eval prompts
    n_prompts: int = 180  # task-world eval prompts (when no prompt files are given), families in equal shares
    tasks: TaskConfig = field(default_factory=TaskConfig)  # families and difficulty of those prompts and the text
    seed: int = 0  # of the prompts, the samples, the held-out text and the bootstrap
    samples: int = 8  # answers sampled per prompt at `temperature` for pass@1 and pass@k (0: none)
    k: int = 4  # the k of pass@k (unbiased estimator from the samples), at most `samples`
    temperature: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 16
    judge: str = "gold"  # win rate against the first model: a judge spec (gold, rm=DIR, safety, llm=DIR, ...)
    text: str = ""  # held-out text for perplexity (documents separated by blank lines); empty: task-world text
    n_documents: int = 100  # task-world documents for perplexity when no text file is given (0: none)
    n_boot: int = 1000  # bootstrap resamples per interval
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        require(bool(self.models), "models is required: --models NAME=DIR,NAME=DIR,...")
        if self.models:
            self.model_dirs  # noqa: B018 (a malformed list fails here, before any work)
        check(self.n_prompts >= 1, f"n_prompts must be at least 1, got {self.n_prompts}")
        check(self.samples == 0 or 1 <= self.k <= self.samples,
              f"need 1 <= k <= samples (pass@k from the samples), got k={self.k}, samples={self.samples}")
        check(self.temperature > 0, f"temperature must be > 0 (it samples for pass@k), got {self.temperature}")
        check(self.max_new_tokens >= 1 and self.batch_size >= 1, "max_new_tokens and batch_size must be at least 1")
        check(self.n_documents >= 0, f"n_documents must be >= 0, got {self.n_documents}")
        check(self.n_boot >= 100, f"n_boot must be at least 100, got {self.n_boot}")
        check(bool(self.judge), "judge must name a judge (gold, rm=DIR, ...)")

    @property
    def model_dirs(self) -> dict[str, str]:
        """{name: folder} in the order given.

        >>> EvalConfig(models="base=runs/sft, dpo=runs/dpo").model_dirs
        {'base': 'runs/sft', 'dpo': 'runs/dpo'}
        """
        out: dict[str, str] = {}
        for spec in (s.strip() for s in self.models.split(",")):
            name, eq, folder = spec.partition("=")
            name, folder = name.strip(), folder.strip()
            if not eq or not name or not folder:
                raise ConfigError(f"--models: {spec!r} is not NAME=DIR (e.g. --models base=runs/sft,dpo=runs/dpo)")
            if name in out:
                raise ConfigError(f"--models: the name {name!r} is given twice")
            out[name] = folder
        return out
