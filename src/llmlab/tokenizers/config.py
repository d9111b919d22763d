"""Configs of the `llmlab tokenizer ...` commands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmlab.config import check


@dataclass(frozen=True)
class TrainTokenizerConfig:
    """`llmlab tokenizer train`."""

    algo: Literal["bpe"] = "bpe"
    vocab_size: int = 8192  # 256 bytes + merges + special tokens
    min_frequency: int = 2  # a pair seen fewer times is never merged
    input: tuple[str, ...] = ()  # text files; empty: the task world's pretraining corpus
    corpus_chars: int = 2_000_000  # size of the built-in corpus when no input is given
    pre_tokenizer: Literal["gpt2", "cl100k", "digits", "whitespace"] = "gpt2"
    normalizer: Literal["none", "nfc", "nfkc", "lowercase"] = "none"
    special_tokens: tuple[str, ...] = ("<|endoftext|>",)
    workers: int = 0  # processes for counting words; 0: one per core for files
    errors: Literal["strict", "replace"] = "strict"  # non-UTF-8 bytes in the input

    def __post_init__(self) -> None:
        floor = 256 + len(self.special_tokens)
        check(self.vocab_size >= floor, f"vocab_size {self.vocab_size} is smaller than 256 bytes + "
              f"{len(self.special_tokens)} special tokens = {floor}")
        check(self.min_frequency >= 1, f"min_frequency must be at least 1, got {self.min_frequency}")
        check(all(self.special_tokens), "a special token is the empty string")
        check(len(set(self.special_tokens)) == len(self.special_tokens), "a special token is given twice")
        check(self.workers >= 0, f"workers must be >= 0, got {self.workers}")
        check(self.corpus_chars >= 1000, f"corpus_chars must be at least 1000, got {self.corpus_chars}")


@dataclass(frozen=True)
class EncodeConfig:
    """`llmlab tokenizer encode`."""

    tokenizer: str = ""
    text: str | None = None
    input: str | None = None
    ids: bool = False
    allowed_special: tuple[str, ...] = ()  # ("all",) for every special token
    errors: Literal["strict", "replace"] = "strict"

    def __post_init__(self) -> None:
        check(bool(self.tokenizer), "tokenizer is required (--tokenizer DIR)")
        check((self.text is None) != (self.input is None), "give exactly one of --text and --input")


@dataclass(frozen=True)
class DecodeConfig:
    """`llmlab tokenizer decode`."""

    tokenizer: str = ""
    ids: str | None = None
    input: str | None = None

    def __post_init__(self) -> None:
        check(bool(self.tokenizer), "tokenizer is required (--tokenizer DIR)")
        check((self.ids is None) != (self.input is None), "give exactly one of --ids and --input")
