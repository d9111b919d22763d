"""Configs of the inference commands: `llmlab profile`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmlab.config import check, require


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
